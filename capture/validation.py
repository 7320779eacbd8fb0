"""The configuration's contract: one validator for every way the configuration changes.

``ConfigUpdateSerializer`` decides a partial update of the monitor configuration. It is the
request schema of ``POST /api/config`` (so the OpenAPI document is the behaviour), and
``capture.services.validate_config_changes`` runs it for the API, the WebSocket's
``update_config`` and the admin form. ``check_interface`` and ``check_bpf`` are its host checks,
which the WebSocket's ``start_capture`` reuses for its ``interface`` and ``bpf``.
``describe`` turns a serializer into the field options the dashboard builds its forms from
(``GET /api/config``'s ``options``), so no key or choice is spelled in JavaScript.

Sensor names are part of Redis keys (a sensor's stream, lock, state, control and heartbeat keys):
``check_sensor_name`` is the one check of ``choices.SENSOR_NAME_PATTERN``, for ``manage.py capture
--sensor``/``NETMON_SENSOR``, ``control.request_capture`` and the WebSocket's ``start_capture``/
``stop_capture``; ``sensor_name_from_host`` makes the capture command's default (the host name,
which nobody typed) a valid name instead of refusing it.

The fields are strict: a JSON value of the wrong type is refused, never coerced (DRF's own
fields take "1000" for 1000 and 1 for "1"), and each refusal says what is allowed, in the
messages users and tests have always read.

Public API: ConfigUpdateSerializer, ClosedSerializer, VocabularyField, StrictField, BpfCompileError,
check_interface, check_bpf, check_sensor_name, sensor_name_from_host, describe, flat_errors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rest_framework import serializers
from rest_framework.fields import empty

from capture import host
from capture.choices import (
    BPF_MAX_LENGTH,
    BUFFER_SIZE_MAX,
    BUFFER_SIZE_MIN,
    CONFIG_KEYS,
    INTERFACE_MAX_LENGTH,
    SENSOR_NAME_MAX_LENGTH,
    SENSOR_NAME_PATTERN,
    SENSOR_NAME_RULE,
    AnalysisDepth,
    EncryptionAlgorithm,
    FeatureLevel,
    MlModel,
)

NON_FIELD = "non_field_errors"


class BpfCompileError(ValueError):
    """libpcap refuses a filter; the message reads "does not compile: <libpcap's reason>"."""


def check_interface(name: str) -> None:
    """Raise ValueError naming the host's interfaces when ``name`` is neither one of them nor 'demo'."""
    if not host.is_valid_interface(name):
        names = ", ".join([host.DEMO_INTERFACE, *host.host_interface_names()])
        raise ValueError(f"this host has no interface {name!r}; choose one of: {names}")


def check_bpf(expression: str) -> None:
    """Raise BpfCompileError when libpcap refuses ``expression``, ValueError when it cannot check it."""
    try:
        host.compile_bpf(expression)
    except host.ToolMissing as exc:
        raise ValueError(f"cannot check the filter: {exc}") from None
    except ValueError as exc:
        raise BpfCompileError(f"does not compile: {exc}") from None


_SENSOR_NAME = re.compile(SENSOR_NAME_PATTERN)
_OUTSIDE_SENSOR_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def check_sensor_name(value: object, field: str = "sensor") -> str:
    """``value`` if it is a sensor name (``SENSOR_NAME_PATTERN``); else ValueError naming ``field``."""
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string of {SENSOR_NAME_RULE}, got {type(value).__name__}")
    if _SENSOR_NAME.fullmatch(value) is None:
        shown = value if len(value) <= 80 else value[:80] + "..."
        raise ValueError(f"{field} {shown!r} is not a valid sensor name: use {SENSOR_NAME_RULE}")
    return value


def sensor_name_from_host(hostname: str) -> str:
    """The host name with every run of other characters replaced by '-', cut to the maximum length."""
    name = _OUTSIDE_SENSOR_NAME.sub("-", hostname).strip("-")[:SENSOR_NAME_MAX_LENGTH]
    return name or "sensor"


# --- fields ---------------------------------------------------------------------------------------
class StrictField:
    """Mixin for DRF fields: whatever the client sent, null included, goes to ``to_internal_value``.

    DRF answers null with "This field may not be null." and runs its own validators after the
    conversion; here ``to_internal_value`` is the whole rule, so every message is the field's.
    An absent field still gets DRF's handling (skipped, or its default).
    """

    def run_validation(self, data: Any = empty) -> Any:
        if data is empty:
            return super().run_validation(data)  # type: ignore[misc]
        return self.to_internal_value(data)  # type: ignore[attr-defined]


class VocabularyField(StrictField, serializers.ChoiceField):
    """One of a closed set of words (a JSON string, exactly: no case folding, no numbers).

    ``hints`` are short remarks on some choices (e.g. that SHA does not encrypt), for forms.
    """

    def __init__(
        self, choices: Iterable[tuple[str, str]], *, hints: Mapping[str, str] | None = None, **kwargs: Any
    ) -> None:
        self.hints = dict(hints or {})
        super().__init__(list(choices), **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str) or data not in self.choices:
            raise serializers.ValidationError(f"{data!r} is not one of: {', '.join(self.choices)}")
        return data


class _BufferSizeField(StrictField, serializers.IntegerField):
    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise serializers.ValidationError(
                f"must be an integer from {BUFFER_SIZE_MIN} to {BUFFER_SIZE_MAX:,}, got {data!r}"
            )
        if not BUFFER_SIZE_MIN <= data <= BUFFER_SIZE_MAX:
            raise serializers.ValidationError(
                f"must be from {BUFFER_SIZE_MIN} to {BUFFER_SIZE_MAX:,}, got {data:,}"
            )
        return data


class _InterfaceField(StrictField, serializers.CharField):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str) or not data:
            raise serializers.ValidationError("must be an interface name or 'demo'")
        try:
            check_interface(data)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return data


class _BpfFilterField(StrictField, serializers.CharField):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            raise serializers.ValidationError("must be a string in BPF syntax, e.g. 'tcp port 443'")
        if len(data) > BPF_MAX_LENGTH:
            raise serializers.ValidationError(f"must be at most {BPF_MAX_LENGTH} characters")
        try:
            check_bpf(data)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return data


# --- the configuration's contract -----------------------------------------------------------------
class ClosedSerializer(serializers.Serializer):
    """A JSON object with only the declared keys; the validated data keeps the body's order.

    ``not_an_object`` and ``unknown_key`` are the messages for a body that is not an object and
    for each key the serializer does not declare; ``error_rank`` orders the errors.
    """

    not_an_object = "expected a JSON object"
    unknown_key = "unknown field"

    def validate_empty_values(self, data: Any) -> tuple[bool, Any]:
        if data is empty:
            return super().validate_empty_values(data)
        return (False, data)  # null is "not an object" below, in our words

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise serializers.ValidationError({NON_FIELD: [self.not_an_object]})
        order = [str(key) for key in data]
        errors: dict[str, Any] = {}
        try:
            validated = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            errors, validated = dict(exc.detail), {}
        for key in data:
            if key not in self.fields:
                errors[str(key)] = [self.unknown_key_message(str(key))]
        if errors:
            rank = self.error_rank(order)
            raise serializers.ValidationError(dict(sorted(errors.items(), key=lambda item: rank(item[0]))))
        # The body's order, so that history rows and stored filters read as the client wrote them.
        return {key: validated[key] for key in sorted(validated, key=lambda key: _position(order, key))}

    def unknown_key_message(self, key: str) -> str:
        return self.unknown_key

    def error_rank(self, body_order: list[str]) -> Callable[[str], Any]:
        """The sort key of the errors' fields: by default, where they stand in the body."""
        return lambda key: _position(body_order, key)


def _position(order: list[str], key: str) -> int:
    return order.index(key) if key in order else len(order)


class ConfigUpdateSerializer(ClosedSerializer):
    """A partial update of the monitor configuration: any of its keys, nothing else.

    The interface must exist on this host (or be 'demo') and the BPF filter must compile with
    libpcap; both are checked here, so a body the schema allows may still be refused (400).
    """

    not_an_object = "expected a JSON object of configuration keys"

    network_interface = _InterfaceField(
        required=False,
        max_length=INTERFACE_MAX_LENGTH,
        help_text="An interface of this host (GET /api/interfaces) or 'demo' for simulated traffic.",
    )
    bpf_filter = _BpfFilterField(
        required=False,
        allow_blank=True,
        max_length=BPF_MAX_LENGTH,
        help_text="A capture filter in BPF syntax that compiles with libpcap; empty: capture everything.",
    )
    buffer_size = _BufferSizeField(
        required=False,
        min_value=BUFFER_SIZE_MIN,
        max_value=BUFFER_SIZE_MAX,
        help_text="Packets the capture may hold unprocessed before dropping the oldest.",
    )
    analysis_depth = VocabularyField(AnalysisDepth.choices, required=False)
    ml_model = VocabularyField(MlModel.choices, required=False)
    feature_level = VocabularyField(FeatureLevel.choices, required=False)
    encryption_algorithm = VocabularyField(
        EncryptionAlgorithm.choices,
        required=False,
        help_text="The default algorithm of exports. SHA gives integrity only, NOT confidentiality.",
    )

    def unknown_key_message(self, key: str) -> str:
        return f"unknown configuration key; known keys: {', '.join(CONFIG_KEYS)}"


# --- what forms need to know, and errors as one message per field ---------------------------------
def describe(serializer: serializers.Serializer) -> dict[str, dict[str, Any]]:
    """Each writable field of ``serializer``: its type, whether required, its choices or bounds."""
    options: dict[str, dict[str, Any]] = {}
    for name, field in serializer.fields.items():
        if field.read_only:
            continue
        info: dict[str, Any] = {"type": _field_type(field), "required": field.required}
        if isinstance(field, serializers.ChoiceField):
            info["choices"] = list(field.choices)
            if getattr(field, "hints", None):
                info["hints"] = dict(field.hints)
        for attribute in ("min_value", "max_value", "max_length", "min_length"):
            if getattr(field, attribute, None) is not None:
                info[attribute.replace("_value", "")] = getattr(field, attribute)
        if getattr(field, "allow_blank", False):
            info["allow_blank"] = True
        if field.default is not empty and not callable(field.default):
            info["default"] = field.default
        if field.help_text:
            info["help_text"] = str(field.help_text)
        if isinstance(field, serializers.Serializer):
            info["fields"] = describe(field)
        options[name] = info
    return options


def _field_type(field: serializers.Field) -> str:
    for kind, name in (
        (serializers.ChoiceField, "choice"),
        (serializers.BooleanField, "boolean"),
        (serializers.IntegerField, "integer"),
        (serializers.DateTimeField, "datetime"),
        (serializers.Serializer, "object"),
    ):
        if isinstance(field, kind):
            return name
    return "string"


def flat_errors(detail: Any, prefix: str = "") -> dict[str, str]:
    """DRF's ``serializer.errors`` as one message per field; nested fields read ``filters.port``."""
    if isinstance(detail, list):
        return {prefix or NON_FIELD: " ".join(str(message) for message in detail)}
    flat: dict[str, str] = {}
    for key, value in detail.items():
        name = f"{prefix}.{key}" if prefix and key != NON_FIELD else (prefix or str(key))
        if isinstance(value, dict):
            flat.update(flat_errors(value, name))
        else:
            flat[name] = " ".join(str(message) for message in value)
    return flat

"""OpenAPI post-processing: document the errors every operation can answer with.

Views declare their success responses and the errors of their own (409, 410, 503). The errors
below come from DRF and Django the same way for every operation (authentication, permissions,
parsing, validation, unknown ids, throttling), so they are added here once rather than repeated
on each view. tests/netmon/test_schemathesis.py checks every response against the result.
"""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA = {
    "type": "object",
    "description": 'An error: {"detail": "..."}, or for invalid input one list of messages per field '
    '(some endpoints: {"detail": "...", "fields": {field: message}}).',
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": True,
}
_DESCRIPTIONS = {
    "400": "Invalid input (malformed JSON, a bad field or query parameter)",
    "401": "Not authenticated, or the token is unknown or expired",
    "403": "Not allowed: the user's role lacks the permission (the detail names it, or says to ask an admin "
    "for a role), or a session request without its CSRF token",
    "404": "No such object, or not yours",
    "415": "Unsupported request body media type",
    "429": "Too many requests: rate limited, retry after the Retry-After header's seconds",
}
_METHODS = {"get", "put", "post", "patch", "delete"}
# Request bodies whose validators refuse unknown keys with a 400 (capture.validation.ClosedSerializer:
# the configuration's, the export request's, the suppression rule's and the notification
# destination's): closed objects, so clients and fuzzers know.
CLOSED_REQUEST_BODIES = (
    "ConfigUpdateRequest",
    "ExportRequestRequest",
    "ExportFiltersRequest",
    "SuppressionRuleRequestRequest",
    "SuppressFromIncidentRequest",
    "DestinationRequestRequest",
    "PatchedDestinationRequestRequest",
)
# Django's and DRF's text fields refuse NUL characters (PostgreSQL cannot store them): say so.
NO_NUL = r"^[^\u0000]*$"


def _refuse_nul(schema: dict[str, Any]) -> None:
    if schema.get("type") == "string" and not {"format", "enum", "pattern"} & set(schema):
        schema["pattern"] = NO_NUL


def _view_classes(generator: Any) -> dict[tuple[str, str], type]:
    classes: dict[tuple[str, str], type] = {}
    for path, _regex, method, callback in getattr(generator, "endpoints", None) or []:
        view = getattr(callback, "cls", None)
        if view is not None:
            classes[(path, method.lower())] = view
    return classes


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular POSTPROCESSING_HOOKS entry (see SPECTACULAR_SETTINGS)."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("Error", ERROR_SCHEMA)
    for name in CLOSED_REQUEST_BODIES:
        if name in schemas:
            schemas[name]["additionalProperties"] = False
    for name, component in schemas.items():
        if name.endswith("Request"):  # COMPONENT_SPLIT_REQUEST: the request side of a serializer
            for prop in component.get("properties", {}).values():
                _refuse_nul(prop)
    views = _view_classes(generator)
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            parameters = operation.get("parameters", [])
            codes = []
            if "requestBody" in operation or any(p.get("in") == "query" for p in parameters):
                codes.append("400")
            if any(requirement for requirement in operation.get("security", [{}])):
                codes += ["401", "403"]
            if any(p.get("in") == "path" for p in parameters):
                codes.append("404")
            if "requestBody" in operation:
                codes.append("415")
            view = views.get((path, method))
            if view is not None and getattr(view, "throttle_classes", None):
                codes.append("429")
            responses = operation.setdefault("responses", {})
            for code in codes:
                responses.setdefault(code, {"description": _DESCRIPTIONS[code]})
            for code, response in responses.items():
                # DRF renders every error as JSON, also where a view documented only a description
                if code[0] in "45" and "content" not in response:
                    response["content"] = {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    }
            # django-filter and the paginator treat ``?name=`` like an absent parameter.
            for parameter in parameters:
                if parameter.get("in") == "query" and not parameter.get("required"):
                    parameter.setdefault("allowEmptyValue", True)
                _refuse_nul(parameter.get("schema", {}))
    return result

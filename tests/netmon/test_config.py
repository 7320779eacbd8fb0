"""GET/POST /api/config: the prototype's keys, their validation, the change history, who may change it,
and the refusal of a model kind that has no active model."""

from __future__ import annotations

import pytest

from capture.choices import MlModel
from capture.models import ConfigChange, MonitorConfig
from detection.models import DetectionModel

pytestmark = pytest.mark.django_db

DEFAULTS = {
    "network_interface": "eth0",
    "bpf_filter": "",
    "buffer_size": 1000,
    "analysis_depth": "basic",
    "ml_model": "autoencoder",
    "feature_level": "advanced",
    "encryption_algorithm": "RSA",
}


@pytest.fixture
def active_models():
    """An active, ready version of every model kind, so that ml_model may name any of them."""
    return [
        DetectionModel.objects.create(
            kind=kind, version=1, feature_level="advanced", status="ready", is_active=True
        )
        for kind in MlModel.values
    ]


def test_get_returns_defaults(viewer_api):
    body = viewer_api.get("/api/config").json()

    assert {k: body[k] for k in DEFAULTS} == DEFAULTS


# --- who may change it ------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["viewer_api", "api", "nogroup_api"])  # viewer, analyst, no role
def test_only_the_admin_role_may_change_the_configuration(request, who, redis_client):
    client = request.getfixturevalue(who)

    response = client.post("/api/config", {"ml_model": "isolation_forest", "buffer_size": 20}, format="json")

    assert response.status_code == 403
    assert ConfigChange.objects.count() == 0
    assert MonitorConfig.objects.filter(buffer_size=20).count() == 0
    assert not redis_client.exists("netmon:capture:version")  # capture was told nothing


def test_the_admin_role_and_superusers_may_change_it(admin_api, staff_api, redis_client):
    assert admin_api.post("/api/config", {"buffer_size": 2000}, format="json").status_code == 200
    assert staff_api.post("/api/config", {"buffer_size": 3000}, format="json").status_code == 200


# --- a model kind without an active model -----------------------------------------------------


def test_switching_to_a_kind_with_no_active_model_is_refused_naming_the_active_ones(admin_api, redis_client):
    DetectionModel.objects.create(kind="autoencoder", version=3, feature_level="advanced", status="ready",
                                  is_active=True)  # fmt: skip
    DetectionModel.objects.create(kind="isolation_forest", version=1, feature_level="advanced",
                                  status="ready", is_active=False)  # fmt: skip

    response = admin_api.post("/api/config", {"ml_model": "isolation_forest"}, format="json")

    assert response.status_code == 400
    message = response.json()["fields"]["ml_model"]
    assert "no active isolation_forest model" in message
    assert "active versions: autoencoder v3" in message
    assert "train_detector --model isolation_forest --use" in message
    assert MonitorConfig.objects.get(pk=1).ml_model == "autoencoder"
    assert ConfigChange.objects.count() == 0


def test_a_kind_with_an_active_model_may_be_chosen(admin_api, redis_client):
    DetectionModel.objects.create(
        kind="both", version=2, feature_level="advanced", status="ready", is_active=True
    )

    response = admin_api.post("/api/config", {"ml_model": "both"}, format="json")

    assert response.status_code == 200
    assert MonitorConfig.objects.get(pk=1).ml_model == "both"


def test_the_current_kind_may_be_sent_back_unchanged_without_a_model(admin_api):
    response = admin_api.post("/api/config", {"ml_model": "autoencoder", "buffer_size": 1000}, format="json")

    assert response.status_code == 200  # nothing changes, so nothing stops


def test_the_services_refuse_it_too(redis_client):
    from capture.services import ConfigError, update_config

    with pytest.raises(ConfigError) as refused:
        update_config({"ml_model": "both"}, source="test")

    assert "no active both model (active versions: none)" in refused.value.errors["ml_model"]


@pytest.mark.parametrize(
    "key,value",
    [
        ("analysis_depth", "basic"),
        ("analysis_depth", "intermediate"),
        ("analysis_depth", "deep"),
        ("ml_model", "isolation_forest"),
        ("ml_model", "both"),
        ("ml_model", "autoencoder"),
        ("feature_level", "low"),
        ("feature_level", "standard"),
        ("encryption_algorithm", "AES-256"),
        ("encryption_algorithm", "AES-192"),
        ("encryption_algorithm", "SHA"),
        ("buffer_size", 10),
        ("buffer_size", 10_000_000),
        ("network_interface", "demo"),
        ("network_interface", "lo"),
        ("bpf_filter", "tcp port 443 or udp port 53"),
        ("bpf_filter", ""),
    ],
)
def test_post_accepts_each_valid_value(admin_api, redis_client, active_models, key, value):
    response = admin_api.post("/api/config", {key: value}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()[key] == value
    assert getattr(MonitorConfig.objects.get(pk=1), key) == value


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("analysis_depth", "ultra", "is not one of: basic, intermediate, deep"),
        ("ml_model", "random_forest", "is not one of: autoencoder, isolation_forest, both"),
        ("feature_level", "max", "is not one of: advanced, standard, low"),
        ("encryption_algorithm", "DES", "is not one of: RSA, AES-256, AES-192, SHA"),
        ("encryption_algorithm", "aes-256", "is not one of"),
        ("buffer_size", 9, "must be from 10 to 10,000,000"),
        ("buffer_size", 10_000_001, "must be from 10 to 10,000,000"),
        ("buffer_size", "1000", "must be an integer"),
        ("buffer_size", True, "must be an integer"),
        ("buffer_size", 12.5, "must be an integer"),
        ("network_interface", "eth99", "this host has no interface 'eth99'"),
        ("network_interface", "", "must be an interface name"),
        ("network_interface", 5, "must be an interface name"),
        ("bpf_filter", "tcp port foo", "does not compile"),
        ("bpf_filter", "x" * 1025, "at most 1024"),
        ("bpf_filter", 80, "must be a string"),
        ("colour", "blue", "unknown configuration key"),
    ],
)
def test_post_rejects_invalid_values_naming_the_field(admin_api, key, value, message):
    response = admin_api.post("/api/config", {key: value}, format="json")

    assert response.status_code == 400
    body = response.json()
    assert body["detail"] == "invalid configuration"
    assert message in body["fields"][key]
    assert ConfigChange.objects.count() == 0


def test_a_bad_key_rejects_the_whole_update(admin_api):
    response = admin_api.post("/api/config", {"buffer_size": 5000, "analysis_depth": "nope"}, format="json")

    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["analysis_depth"]
    from capture.services import get_config

    assert get_config().buffer_size == 1000


def test_non_object_body_is_rejected(admin_api):
    response = admin_api.post("/api/config", [1, 2], format="json")

    assert response.status_code == 400
    assert "expected a JSON object" in response.json()["fields"]["non_field_errors"]


def test_history_records_who_when_old_and_new(admin_api, admin_role, viewer_api, active_models, redis_client):
    admin_api.post("/api/config", {"buffer_size": 5000, "ml_model": "both"}, format="json")
    admin_api.post("/api/config", {"buffer_size": 5000}, format="json")  # no change: no history row

    (change,) = ConfigChange.objects.all()
    assert change.user == admin_role
    assert change.source == "api"
    assert change.old_values == {"buffer_size": 1000, "ml_model": "autoencoder"}
    assert change.new_values == {"buffer_size": 5000, "ml_model": "both"}
    history = viewer_api.get("/api/config/history").json()  # every role may read the history
    assert history[0]["user"] == "ada"
    assert history[0]["new_values"] == {"buffer_size": 5000, "ml_model": "both"}


def test_update_notifies_capture_processes_through_redis(admin_api, redis_client):
    from capture import control

    admin_api.post("/api/config", {"network_interface": "demo"}, format="json")

    command = control.pending_command("any-sensor", 0, redis_client)
    assert command["action"] == "reconfigure"


def test_get_says_each_keys_options_from_the_validator(viewer_api):
    from capture.choices import (
        BPF_MAX_LENGTH,
        BUFFER_SIZE_MAX,
        BUFFER_SIZE_MIN,
        CONFIG_KEYS,
        INTERFACE_MAX_LENGTH,
        AnalysisDepth,
        EncryptionAlgorithm,
        FeatureLevel,
        MlModel,
    )

    options = viewer_api.get("/api/config").json()["options"]

    assert list(options) == list(CONFIG_KEYS)
    assert options["analysis_depth"]["choices"] == AnalysisDepth.values
    assert options["ml_model"]["choices"] == MlModel.values
    assert options["feature_level"]["choices"] == FeatureLevel.values
    assert options["encryption_algorithm"]["choices"] == EncryptionAlgorithm.values
    assert (options["buffer_size"]["type"], options["buffer_size"]["min"], options["buffer_size"]["max"]) == (
        "integer",
        BUFFER_SIZE_MIN,
        BUFFER_SIZE_MAX,
    )
    assert options["network_interface"]["type"] == "string"
    assert options["network_interface"]["max_length"] == INTERFACE_MAX_LENGTH
    assert options["bpf_filter"]["max_length"] == BPF_MAX_LENGTH
    assert options["bpf_filter"]["allow_blank"] is True
    assert not any(option["required"] for option in options.values())


def test_posting_gets_answer_back_is_refused_only_for_the_read_only_extras(admin_api, redis_client):
    MonitorConfig.objects.create(pk=1, network_interface="demo")  # an interface every host has
    body = admin_api.get("/api/config").json()

    response = admin_api.post("/api/config", body, format="json")

    assert response.status_code == 400
    assert set(response.json()["fields"]) == {"updated_at", "options"}
    assert all("unknown configuration key" in m for m in response.json()["fields"].values())
    read_only = {key: body.pop(key) for key in ("updated_at", "options")}
    assert read_only and admin_api.post("/api/config", body, format="json").status_code == 200

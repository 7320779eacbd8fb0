"""Model artifacts are code (joblib pickles, Keras files): loaded only from NETMON_MODEL_DIR, only intact."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from capture.demo import DemoTraffic
from capture.pcapwriter import write_pcap
from detection import services
from detection.models import DetectionModel

pytestmark = pytest.mark.django_db


@pytest.fixture
def model_dir(settings, tmp_path):
    settings.NETMON_MODEL_DIR = tmp_path / "models"
    return settings.NETMON_MODEL_DIR


@pytest.fixture
def benign_pcap(tmp_path):
    path = tmp_path / "benign.pcap"
    write_pcap(path, DemoTraffic(seed=3, attack_prob=0.0).records(3000))
    return path


@pytest.fixture
def trained(model_dir, benign_pcap, redis_client) -> DetectionModel:
    call_command(
        "train_detector",
        "--pcap",
        str(benign_pcap),
        "--model",
        "isolation_forest",
        "--feature-level",
        "low",
        "--use",
    )
    return DetectionModel.objects.get(is_active=True)


def test_training_records_the_digest_of_the_artifacts(trained):
    assert len(trained.artifact_sha256) == 64
    assert trained.artifact_sha256 == services.artifact_digest(trained.artifact_path)
    assert services.outdated_reason(trained) is None


def test_artifacts_outside_the_model_directory_are_refused(trained, tmp_path, benign_pcap):
    elsewhere = tmp_path / "elsewhere" / "isolation_forest-v1"
    shutil.copytree(trained.artifact_path, elsewhere)
    trained.artifact_path = str(elsewhere)  # e.g. written into the database by someone else
    trained.save()

    reason = services.outdated_reason(trained)

    assert reason is not None and "not under NETMON_MODEL_DIR" in reason
    with pytest.raises(services.ActivationError, match="not under NETMON_MODEL_DIR"):
        services.activate_model(trained)
    with pytest.raises(CommandError, match="not under NETMON_MODEL_DIR"):
        call_command("score_pcap", str(benign_pcap), "--out", str(tmp_path / "scores.csv"))


def test_a_path_that_climbs_out_of_the_model_directory_is_refused(trained, model_dir):
    trained.artifact_path = str(Path(model_dir) / ".." / "isolation_forest-v1")
    trained.save()

    assert "not under NETMON_MODEL_DIR" in services.outdated_reason(trained)


def test_artifacts_changed_since_training_are_refused(trained, tmp_path, benign_pcap):
    with open(Path(trained.artifact_path) / "scaler.npz", "ab") as handle:
        handle.write(b"\0")

    reason = services.outdated_reason(trained)

    assert reason is not None and "SHA-256 mismatch" in reason
    with pytest.raises(CommandError, match="SHA-256 mismatch"):
        call_command("score_pcap", str(benign_pcap), "--out", str(tmp_path / "scores.csv"))
    status = services.detection_status()
    assert "not scored" in status["models_note"] and "SHA-256 mismatch" in status["models_note"]


def test_a_model_without_a_recorded_digest_is_refused_and_if_none_trains_a_new_one(trained, benign_pcap):
    DetectionModel.objects.filter(pk=trained.pk).update(artifact_sha256="")
    trained.refresh_from_db()

    assert "no recorded artifact digest" in services.outdated_reason(trained)

    call_command("train_detector", "--pcap", str(benign_pcap), "--if-none")
    new = DetectionModel.objects.get(is_active=True)
    assert new.version == 2 and services.outdated_reason(new) is None

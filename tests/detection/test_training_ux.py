"""Training says whether the new model is the one in use; score_pcap's "no active model" names the
configured kind and the versions that are active."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from capture.demo import DemoTraffic
from capture.pcapwriter import write_pcap
from capture.services import get_config

pytestmark = pytest.mark.django_db


@pytest.fixture
def benign_pcap(tmp_path, settings):
    settings.NETMON_MODEL_DIR = tmp_path / "models"
    path = tmp_path / "benign.pcap"
    write_pcap(path, DemoTraffic(seed=1, attack_prob=0.0).records(6_000))
    return path


def test_training_another_kind_than_configured_says_it_is_not_in_use_and_score_pcap_says_why(
    benign_pcap, tmp_path, capsys, redis_client
):
    configured = get_config().ml_model
    assert configured != "isolation_forest"

    call_command("train_detector", "--pcap", str(benign_pcap), "--model", "isolation_forest",
                 "--feature-level", get_config().feature_level)  # fmt: skip

    said = capsys.readouterr().out
    assert f"not in use: the configuration's ml_model is {configured}" in said
    assert "--use" in said
    with pytest.raises(CommandError) as refused:
        call_command("score_pcap", str(benign_pcap), "--out", str(tmp_path / "scores.csv"))
    assert f"no active {configured} model" in str(refused.value)
    assert "active versions: isolation_forest v1" in str(refused.value)

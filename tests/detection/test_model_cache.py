"""The model a worker process holds (scoring._ModelCache) follows the model in use."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import transaction

from capture import services as capture_services
from capture.demo import DemoTraffic
from detection import ml, scoring, services


class _RolledBack(Exception):
    pass


def _train_and_use(records: np.ndarray):
    row = services.create_training("isolation_forest", "standard", "test")
    row = services.train(row, [records], activate=False, quantile=0.9)
    row = services.activate_model(row, force_level=True)
    config = {"ml_model": "isolation_forest", "feature_level": "standard"}
    capture_services.update_config(config, source="test")
    return row


def test_a_model_saved_under_a_rolled_back_models_id_and_version_is_loaded(db, settings, tmp_path):
    # SQLite hands a rolled-back row's id out again, and the version number with it: the new model
    # is saved at the same path. A worker that knew models by id kept scoring with the old one.
    settings.NETMON_MODEL_DIR = tmp_path / "models"
    scoring._models.__init__()  # as in a new process
    with pytest.raises(_RolledBack), transaction.atomic():
        _train_and_use(DemoTraffic(seed=1, attack_prob=0.0).records(3_000))
        assert scoring._models.current() is not None
        raise _RolledBack

    row = _train_and_use(DemoTraffic(seed=2, attack_prob=0.0).records(3_000))
    held_row, held_model, _ = scoring._models.current()

    assert (held_row.pk, held_row.artifact_sha256) == (row.pk, row.artifact_sha256)
    probe = DemoTraffic(seed=3).records(500)
    fx = scoring._models.extractor
    X = fx.transform(probe, fx.new_state())
    np.testing.assert_array_equal(held_model.score(X), ml.load_model(row.artifact_path).score(X))

"""A read continues the feature state the previous read in the process left (scoring._LiveStates)."""

from __future__ import annotations

import numpy as np
import pytest

from capture import services as capture_services
from capture.demo import DemoTraffic
from capture.models import Sensor
from capture.records import Batch
from detection import ingest, scoring, services
from detection.features import FeatureState


@pytest.fixture
def traffic(db, settings, tmp_path):
    """An isolation forest at the standard level trained on benign demo traffic, the model in use."""
    settings.NETMON_MODEL_DIR = tmp_path / "models"
    demo = DemoTraffic(seed=1, attack_prob=0.0)
    row = services.create_training("isolation_forest", "standard", "test")
    row = services.train(row, [demo.records(6_000)], activate=False, quantile=0.9)
    services.activate_model(row, force_level=True)
    config = {"ml_model": "isolation_forest", "feature_level": "standard"}
    capture_services.update_config(config, source="test")
    scoring._models.__init__()  # as in a new process
    scoring._live_states.__init__()
    return demo


@pytest.fixture
def parses(monkeypatch):
    """How many times a saved feature state is parsed (``FeatureState.from_bytes``)."""
    calls = []
    real = FeatureState.from_bytes.__func__

    def counted(cls, data: bytes) -> FeatureState:
        calls.append(len(data))
        return real(cls, data)

    monkeypatch.setattr(FeatureState, "from_bytes", classmethod(counted))
    return calls


def _read(sensor: Sensor, records: np.ndarray, state: ingest.SensorState) -> scoring.ScoredBatch:
    scored = scoring.score_batch(sensor, Batch(sensor=sensor.name, records=records), state)
    assert scored is not None
    return scored


def _as_in_a_new_process(sensor: Sensor, records: np.ndarray, saved: bytes) -> scoring.ScoredBatch:
    scoring._live_states.__init__()
    return _read(sensor, records, ingest.SensorState(features=saved))


def _same(a: scoring.ScoredBatch, b: scoring.ScoredBatch) -> None:
    assert np.array_equal(a.scores, b.scores)
    assert a.top_features == b.top_features
    assert np.array_equal(a.opened, b.opened)
    assert a.feature_state == b.feature_state


def test_the_next_read_continues_the_state_the_last_read_left_without_parsing_it(traffic, parses):
    sensor = Sensor.objects.create(name="live")
    state = ingest.SensorState()
    first, second = traffic.records(3000), traffic.records(3000)
    state.features = _read(sensor, first, state).feature_state  # (as ingest's _save_state does)
    saved = state.features
    parses.clear()

    scored = _read(sensor, second, state)

    assert parses == []
    _same(scored, _as_in_a_new_process(sensor, second, saved))


def test_a_read_parses_the_saved_state_when_it_is_not_what_this_process_left(traffic, parses):
    """Another worker took the sensor over and saved a later state, or this process's last read failed
    after scoring: the bytes saved are not those it left, and they decide."""
    sensor = Sensor.objects.create(name="moved")
    first, elsewhere, second = traffic.records(3000), traffic.records(3000), traffic.records(3000)
    left_here = _read(sensor, first, ingest.SensorState()).feature_state
    saved_elsewhere = _as_in_a_new_process(sensor, elsewhere, left_here).feature_state
    _read(sensor, first, ingest.SensorState())  # this process's last read left ``left_here`` again
    parses.clear()

    scored = _read(sensor, second, ingest.SensorState(features=saved_elsewhere))

    assert parses == [len(saved_elsewhere)]
    _same(scored, _as_in_a_new_process(sensor, second, saved_elsewhere))

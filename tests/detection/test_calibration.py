"""Thresholds calibrated to a false-incident rate: the tail fit, the rate it gives on fresh data,
the fallback on small data, the setting, and the figures evaluate_detector reports at the threshold."""

from __future__ import annotations

import json

import numpy as np
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command

from capture.demo import DemoTraffic
from capture.pcapwriter import write_pcap
from detection import calibration, ml
from detection.evaluate import at_threshold
from detection.features import FeatureExtractor
from detection.opening import OPEN_MIN_ANOMALIES, openings
from netmon.settings import env_float


def gpd_sample(xi: float, sigma: float, n: int, seed: int) -> np.ndarray:
    """Generalized Pareto draws by inversion: sigma / xi * (U ** -xi - 1)."""
    u = np.random.default_rng(seed).random(n)
    return sigma / xi * (u**-xi - 1.0)


@pytest.mark.parametrize(("xi", "sigma"), [(0.2, 1.5), (-0.2, 0.5), (0.05, 3.0)])
def test_tail_fit_recovers_known_gpd_parameters(xi, sigma):
    y = gpd_sample(xi, sigma, 5000, seed=1)

    fitted_xi, fitted_sigma, method = calibration.fit_gpd(y)
    pwm_xi, pwm_sigma = calibration._gpd_pwm(np.sort(y))

    assert method == "mle"
    assert fitted_xi == pytest.approx(xi, abs=0.05)
    assert fitted_sigma == pytest.approx(sigma, rel=0.06)
    assert pwm_xi == pytest.approx(xi, abs=0.07)  # the estimate used without SciPy
    assert pwm_sigma == pytest.approx(sigma, rel=0.08)
    # the quantile function inverts the survival function
    assert calibration.gpd_sf(calibration.gpd_isf(1e-4, xi, sigma), xi, sigma) == pytest.approx(1e-4)


def synthetic(seconds: float, seed: int, entities: int = 4, rate: float = 0.5, bursts_per_hour: float = 20.0):
    """Benign scores like a detector's: each entity's packets (Poisson, ``rate`` per second) score
    N(0, 1) independently, and now and then (``bursts_per_hour``) one entity sends 15 packets in a
    second that all score about a level drawn from 1.5 + Exp(1): an odd but benign burst, the
    kind of cluster that opens false incidents. Returns (scores, times, keys) in time order."""
    rng = np.random.default_rng(seed)
    n = rng.poisson(seconds * entities * rate)
    times, keys, scores = rng.uniform(0, seconds, n), rng.integers(0, entities, n), rng.normal(size=n)
    bursts = rng.poisson(seconds / 3600 * bursts_per_hour)
    start, level = rng.uniform(0, seconds, bursts), 1.5 + rng.exponential(1.0, bursts)
    times = np.r_[times, (start[:, None] + rng.uniform(0, 1.0, (bursts, 15))).ravel()]
    scores = np.r_[scores, (level[:, None] + rng.normal(0, 0.1, (bursts, 15))).ravel()]
    keys = np.r_[keys, np.repeat(rng.integers(0, entities, bursts), 15)]
    order = np.argsort(times, kind="stable")
    return scores[order], times[order], keys[order]


def incidents_per_day(data, threshold: float, days: float) -> float:
    scores, times, keys = data
    flagged = scores > threshold
    return len(openings(times[flagged], keys[flagged])) / days


def test_calibrated_threshold_meets_the_target_on_fresh_data_and_a_lower_target_gives_fewer():
    fresh = synthetic(20 * 86400, seed=99)  # 20 days from the same distribution, not seen in calibration
    measured = {8.0: [], 1.0: []}
    for seed in (1, 2, 3):
        validation = synthetic(6 * 3600, seed)  # six hours of benign validation traffic
        thresholds = {}
        for target in measured:
            result = calibration.calibrate(*validation, target)
            assert result["method"] == "evt" and result["target_reachable"]
            assert result["expected_false_incidents_per_day"] <= target * (1 + 1e-9)
            assert result["validation_flagged_share"] <= 0.005
            assert result["validation_incidents_at_threshold"] == 0
            thresholds[target] = result["threshold"]
            measured[target].append(incidents_per_day(fresh, result["threshold"], 20))
        assert thresholds[1.0] > thresholds[8.0]

    # An estimate from six hours of traffic: near the target on average, never far above it.
    assert 0.2 <= np.mean(measured[1.0]) <= 2.0
    assert max(measured[1.0]) <= 3.0
    assert np.mean(measured[8.0]) <= 8.0
    assert np.mean(measured[1.0]) < np.mean(measured[8.0])
    # The quantile rule, for comparison: 0.5 % of packets flagged opens far more than that.
    q = float(np.quantile(synthetic(6 * 3600, 1)[0], 0.995))
    assert incidents_per_day(fresh, q, 20) > 50


def test_short_validation_stops_at_the_tail_fits_support_and_says_so():
    validation = synthetic(600, seed=4, entities=40, rate=1.0, bursts_per_hour=120)  # ten minutes

    result = calibration.calibrate(*validation, 0.01)

    assert not result["target_reachable"]
    assert result["expected_false_incidents_per_day"] > 0.01
    assert "train on longer traffic" in result["message"]
    assert result["validation_seconds_needed"] > result["validation_seconds"]


def test_small_training_sets_fall_back_to_the_quantile_rule():
    fx = FeatureExtractor("low")
    records = DemoTraffic(5).records(6000)
    X = fx.transform(records)

    model = ml.train_model("isolation_forest", X, fx.names, records, level="low", n_estimators=20)
    without_records = ml.train_model("isolation_forest", X, fx.names, level="low", n_estimators=20)

    assert model.calibration["method"] == "quantile"
    assert "calibration needs 10,000" in model.calibration["message"]
    assert model.threshold == model.calibration["threshold"]
    assert model.trained_samples == 6000  # nothing held out
    assert without_records.calibration["method"] == "quantile"
    assert "no packet times" in without_records.calibration["message"]


def test_training_holds_out_the_last_quarter_and_saves_the_calibration(tmp_path):
    fx = FeatureExtractor("standard")
    records = DemoTraffic(21).records(40_000)
    X = fx.transform(records)

    model = ml.train_model("isolation_forest", X, fx.names, records, level="standard", n_estimators=30)
    loaded = ml.load_model(model.save(tmp_path / "m"))

    cal = model.calibration
    assert cal["method"] == "evt"
    assert model.trained_samples == 30_000  # fitted on the first three quarters
    assert cal["validation_rows"] == 10_000
    validation = model.score(X[30_000:])
    assert cal["validation_flagged_share"] == pytest.approx(float(np.mean(validation > model.threshold)))
    assert model.threshold >= np.quantile(validation, 0.995)  # at most 0.5 % of benign flagged
    assert {"xi", "sigma", "u"} <= set(cal["gpd"])
    assert cal["validation_seconds"] == pytest.approx(float(np.ptp(records["ts"][30_000:])))
    assert loaded.calibration == json.loads(json.dumps(cal))
    assert loaded.false_incidents_per_day == 1.0


def test_at_threshold_counts_false_incidents_recall_and_delay():
    rng = np.random.default_rng(0)
    # benign: one hour, two hosts; host 1 has one dense flagged burst (one false incident)
    times = np.sort(rng.uniform(0, 3600, 5000))
    keys = rng.integers(0, 2, 5000)
    scores = rng.normal(size=5000)
    burst = np.arange(100, 100 + OPEN_MIN_ANOMALIES)
    times[burst], keys[burst], scores[burst] = 50 + np.arange(OPEN_MIN_ANOMALIES) * 0.1, 1, 10.0
    labels = np.zeros(5000, int)
    # attack 1 from host 7: 40 packets, 1 per 0.1 s from t=1000, all scored high; attack 2: low scores
    t1 = 1000 + np.arange(40) * 0.1
    t2 = 2000 + np.arange(40) * 0.1
    labels = np.r_[labels, np.full(40, 1), np.full(40, 2)]
    times = np.r_[times, t1, t2]
    keys = np.r_[keys, np.full(40, 7), np.full(40, 8)]
    scores = np.r_[scores, np.full(40, 9.0), np.full(40, 0.0)]

    out = at_threshold(labels, scores, times, keys, 5.0, names={1: "syn_flood", 2: "port_scan"})

    assert out["benign"]["incidents"] == 1
    assert out["benign"]["incidents_per_hour"] == pytest.approx(3600 / np.ptp(times[labels == 0]))
    assert out["benign"]["flagged"] == pytest.approx(OPEN_MIN_ANOMALIES / 5000)
    flood, scan = out["per_attack"]["syn_flood"], out["per_attack"]["port_scan"]
    assert flood["recall"] == 1.0 and flood["opened"]
    assert flood["delay"] == pytest.approx((OPEN_MIN_ANOMALIES - 1) * 0.1)
    assert scan["recall"] == 0.0 and not scan["opened"] and scan["delay"] is None


@pytest.mark.parametrize("raw", ["abc", "0", "-1", "nan", "inf"])
def test_the_setting_refuses_what_is_not_a_positive_number(monkeypatch, raw):
    monkeypatch.setenv("NETMON_FALSE_INCIDENTS_PER_DAY", raw)

    with pytest.raises(ImproperlyConfigured, match="NETMON_FALSE_INCIDENTS_PER_DAY"):
        env_float("NETMON_FALSE_INCIDENTS_PER_DAY", 1.0, above=0.0)


def test_the_setting_reaches_training(settings, monkeypatch):
    monkeypatch.setenv("NETMON_FALSE_INCIDENTS_PER_DAY", "0.25")
    assert env_float("NETMON_FALSE_INCIDENTS_PER_DAY", 1.0, above=0.0) == 0.25
    assert settings.NETMON_FALSE_INCIDENTS_PER_DAY == 1.0  # the default


@pytest.mark.django_db
def test_evaluate_detector_reports_the_figures_at_the_threshold(tmp_path, capsys):
    write_pcap(tmp_path / "benign.pcap", DemoTraffic(seed=1, attack_prob=0.0).records(30_000))
    traffic = DemoTraffic(seed=7, attack_prob=0.0)
    traffic.inject("port_scan")
    records = traffic.records(20_000)
    write_pcap(tmp_path / "test.pcap", records)
    with open(tmp_path / "labels.csv", "w") as handle:
        handle.write("frame,label,attack\n")
        for frame, label in enumerate(records["label"].tolist(), start=1):
            handle.write(f"{frame},{int(label > 0)},{'port_scan' if label else ''}\n")

    call_command("evaluate_detector", "--train", str(tmp_path / "benign.pcap"), "--test",
                 str(tmp_path / "test.pcap"), "--labels", str(tmp_path / "labels.csv"), "--model",
                 "isolation_forest", "--feature-level", "standard", "--false-incidents-per-day", "2",
                 "--json", str(tmp_path / "report.json"))  # fmt: skip

    out = capsys.readouterr().out
    assert "calibrated to 2 false incidents/day" in out
    assert "false incidents in" in out and "per hour" in out
    assert "port_scan: recall" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["calibration"]["method"] == "evt"
    assert report["calibration"]["target_false_incidents_per_day"] == 2.0
    benign = report["at_threshold"]["benign"]
    assert {"flagged", "incidents", "incidents_per_hour", "seconds"} <= set(benign)
    scan = report["at_threshold"]["per_attack"]["port_scan"]
    assert scan["recall"] > 0.5 and scan["opened"] and scan["delay"] >= 0
    assert report["ranking"]["per_attack"]["port_scan"]["auc"] > 0.9

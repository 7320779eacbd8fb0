"""evaluate_detector --plot (ROC and precision-recall curves per attack, the threshold's operating
point) and the progress lines of train_detector and evaluate_detector off a terminal."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from sklearn.metrics import precision_recall_curve
from sklearn.metrics import roc_curve as sklearn_roc_curve

from capture.demo import DemoTraffic
from capture.pcapwriter import write_pcap
from detection.evaluate import operating_point, pr_curve, roc_curve
from detection.plots import plot_evaluation

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR" and data.endswith(b"IEND\xaeB`\x82")
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    """A benign capture to train on, and a test capture with a port scan and its labels."""
    folder = tmp_path_factory.mktemp("labeled")
    write_pcap(folder / "benign.pcap", DemoTraffic(seed=1, attack_prob=0.0).records(30_000))
    traffic = DemoTraffic(seed=7, attack_prob=0.0)
    traffic.inject("port_scan")
    records = traffic.records(20_000)
    write_pcap(folder / "test.pcap", records)
    with open(folder / "labels.csv", "w") as handle:
        handle.write("frame,label,attack\n")
        for frame, label in enumerate(records["label"].tolist(), start=1):
            handle.write(f"{frame},{int(label > 0)},{'port_scan' if label else ''}\n")
    return folder


def evaluate_args(folder) -> list[str]:
    return ["evaluate_detector", "--train", str(folder / "benign.pcap"), "--test", str(folder / "test.pcap"),
            "--labels", str(folder / "labels.csv"), "--model", "isolation_forest",
            "--feature-level", "standard"]  # fmt: skip


def test_curves_match_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.random(4000) < 0.2
    s = np.round(rng.normal(size=4000) + y, 1)

    fpr, tpr = roc_curve(y, s)
    recall, precision = pr_curve(y, s)

    ref_fpr, ref_tpr, _ = sklearn_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    ref_precision, ref_recall, _ = precision_recall_curve(y, s)  # lowest threshold first, then (1, 0)
    np.testing.assert_allclose(recall, ref_recall[:-1][::-1])
    np.testing.assert_allclose(precision, ref_precision[:-1][::-1])


def test_operating_point_counts_scores_above_the_threshold():
    y = np.array([0, 0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.6, 0.9, 0.5, 0.95])
    assert operating_point(y, s, 0.55) == {"fpr": 0.5, "tpr": 0.5, "precision": pytest.approx(1 / 3)}
    assert np.isnan(operating_point(y, s, 1.0)["precision"])  # nothing flagged


def test_plot_of_several_attacks_is_a_png_of_the_expected_size(tmp_path):
    rng = np.random.default_rng(3)
    labels = np.r_[np.zeros(50_000, int), np.full(2000, 1), np.full(3000, 2)]
    scores = np.r_[rng.normal(size=50_000), rng.normal(3.5, 1, 2000), rng.normal(1.2, 1, 3000)]

    plot_evaluation(tmp_path / "roc.png", labels, scores, {1: "port_scan", 2: "syn_flood"}, 2.8, "title")

    assert png_size(tmp_path / "roc.png") == (1430, 770)


def test_evaluate_detector_plots_and_reports_progress_off_a_terminal(labeled, tmp_path):
    out = io.StringIO()

    call_command(*evaluate_args(labeled), "--plot", str(tmp_path / "roc.png"), stdout=out)

    text = out.getvalue()
    assert png_size(tmp_path / "roc.png") == (1430, 770)
    assert f"plot: {tmp_path / 'roc.png'}" in text
    for phase in ("training data", "test data", "scoring"):
        assert f"evaluate_detector: {phase}: " in text and "packets/s" in text
        assert f"evaluate_detector: {phase}: done, " in text
    assert "evaluate_detector: scoring: 20,000 of 20,000 packets (100%)" in text
    assert "evaluate_detector: fitting isolation_forest on 30,000 packets" in text
    assert "\x1b[" not in text


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("roc.txt", "must end in one of .png, .svg, .pdf"),
        ("missing/roc.png", "does not exist"),
        ("benign.pcap/roc.png", "is not a directory"),
        ("/proc/roc.png", "cannot write in '/proc'"),  # refused even to root
    ],
)
def test_a_bad_plot_path_is_refused_before_any_work_naming_the_option(labeled, name, message):
    path = name if name.startswith("/") else str(labeled / name)

    with pytest.raises(CommandError) as refused:
        call_command(*evaluate_args(labeled), "--plot", path)

    assert "--plot" in str(refused.value) and message in str(refused.value)


@pytest.mark.django_db
def test_train_detector_reports_progress_and_the_fit_off_a_terminal(settings, tmp_path):
    settings.NETMON_MODEL_DIR = tmp_path / "models"
    out = io.StringIO()

    call_command(
        "train_detector", "--demo", "5000", "--model", "isolation_forest", "--no-activate", stdout=out
    )

    lines = out.getvalue().splitlines()
    assert "train_detector: 5,000 of 5,000 packets (100%)" in lines[0] and "ETA" in lines[0]
    assert lines[1].startswith("train_detector: done, 5,000 packets in ")
    assert lines[2] == "train_detector: fitting isolation_forest on 5,000 packets"
    assert lines[3].startswith("trained isolation_forest v1")

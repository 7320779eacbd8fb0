"""Pictures of a detector's quality: ROC and precision-recall curves per attack, with the threshold's
operating point (``evaluate_detector --plot roc.png``).

matplotlib is imported when a picture is drawn, not before (it costs a second of start-up), and
through its object API on the Agg canvas: no pyplot, no display, no global backend switch.
The curves come from ``detection.evaluate`` (pure NumPy); this module only draws.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from detection.evaluate import operating_point, pr_curve, roc_auc, roc_curve

# the file types --plot writes (matplotlib picks the format from the extension)
PLOT_FORMATS = ("png", "svg", "pdf")
MAX_POINTS = 4000  # a curve has one point per distinct score: thin it, keeping the low-FPR end


def check_plot_path(text: str) -> Path:
    """The path of a picture to write, or ValueError saying why not (checked before minutes of work).

    Writability is tried, not inferred from permission bits (root passes those everywhere, and a
    read-only or virtual file system refuses anyway): a scratch file is made and removed beside it.
    """
    path = Path(text)
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        allowed = ", ".join(f".{f}" for f in PLOT_FORMATS)
        raise ValueError(f"{text!r} must end in one of {allowed}")
    if path.is_dir():
        raise ValueError(f"{text!r} is a directory")
    folder = path.parent
    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "does not exist"
        raise ValueError(f"{text!r}: {str(folder)!r} {what}")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".netmon-plot-"):
            pass
    except OSError as exc:
        raise ValueError(f"{text!r}: cannot write in {str(folder)!r} ({exc.strerror or exc})") from None
    return path


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(x)
    if n <= MAX_POINTS:
        return x, y
    # evenly spaced, plus geometrically spaced from the start (the highest thresholds: low FPR)
    idx = np.unique(
        np.r_[
            np.linspace(0, n - 1, MAX_POINTS // 2).astype(np.int64),
            np.geomspace(1, n, MAX_POINTS // 2).astype(np.int64) - 1,
        ]
    )
    return x[idx], y[idx]


def plot_evaluation(
    path: str | os.PathLike[str],
    labels: np.ndarray,
    scores: np.ndarray,
    names: Mapping[int, str],
    threshold: float,
    title: str,
) -> None:
    """Write ROC (left) and precision-recall (right) curves of each attack against all benign
    packets, and the point ``threshold`` operates at on each, to ``path`` (png, svg or pdf)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    benign = labels == 0
    n_benign = int(benign.sum())
    # FPR on a log scale (an IDS lives at 0.1 % and below); an FPR of 0 is drawn at the left edge
    floor = 0.5 / max(n_benign, 1)

    fig = Figure(figsize=(13, 7), dpi=110, layout="constrained")
    roc_ax, pr_ax = fig.subplots(1, 2)
    colors = iter(
        ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
         "tab:olive", "tab:cyan", "tab:gray"] * 10
    )  # fmt: skip
    codes = sorted(int(c) for c in np.unique(labels) if c)
    for code in codes:
        mask = labels == code
        sel = benign | mask
        y, s = mask[sel], scores[sel]
        name = names.get(code, str(code)) or str(code)
        color = next(colors)
        point = operating_point(y, s, threshold)
        label = (
            f"{name}: AUC {roc_auc(y, s):.3f}, n={int(mask.sum()):,}; "
            f"at the threshold TPR {point['tpr']:.2f}, FPR {point['fpr']:.2%}"
        )
        fpr, tpr = _thin(*roc_curve(y, s))
        roc_ax.step(np.maximum(fpr, floor), tpr, where="post", color=color, lw=1.6, label=label)
        recall, precision = _thin(*pr_curve(y, s))
        label = f"{name}: at the threshold recall {point['tpr']:.2f}, precision {point['precision']:.2f}"
        pr_ax.plot(recall, precision, color=color, lw=1.6, label=label)
        roc_ax.plot(max(point["fpr"], floor), point["tpr"], "o", ms=9, color=color, mec="black", mew=1.2)
        if np.isfinite(point["precision"]):
            pr_ax.plot(point["tpr"], point["precision"], "o", ms=9, color=color, mec="black", mew=1.2)
    chance = np.geomspace(floor, 1.0, 200)
    roc_ax.plot(chance, chance, ":", color="grey", lw=1, label="chance")
    marker = Line2D([], [], ls="", marker="o", ms=9, mfc="white", mec="black", mew=1.2,
                    label=f"operating point at the threshold {threshold:.4g}")  # fmt: skip

    roc_ax.set_xscale("log")
    roc_ax.set_xlim(floor, 1.0)
    roc_ax.set_ylim(-0.02, 1.02)
    roc_ax.set_title("ROC: each attack against all benign packets")
    roc_ax.set_xlabel(f"false-positive rate (share of {n_benign:,} benign packets flagged; log scale)")
    roc_ax.set_ylabel("true-positive rate (share of the attack's packets flagged)")
    roc_ax.grid(True, which="major", alpha=0.3)
    handles, texts = roc_ax.get_legend_handles_labels()
    # legends under the axes: inside, they hid the low-FPR end of the curves and operating points
    below = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.12), "fontsize": 9, "frameon": False}
    roc_ax.legend([*handles, marker], [*texts, marker.get_label()], **below)

    pr_ax.set_xlim(-0.02, 1.02)
    pr_ax.set_ylim(-0.02, 1.02)
    pr_ax.set_title("Precision-recall: each attack against all benign packets")
    pr_ax.set_xlabel("recall (share of the attack's packets flagged)")
    pr_ax.set_ylabel("precision (share of flagged packets that are the attack's)")
    pr_ax.grid(True, alpha=0.3)
    handles, texts = pr_ax.get_legend_handles_labels()
    pr_ax.legend([*handles, marker], [*texts, marker.get_label()], **below)
    if not codes:
        for ax in (roc_ax, pr_ax):
            ax.text(0.5, 0.5, "no attack packets in the labels", ha="center", transform=ax.transAxes)
    fig.suptitle(title, fontsize=13)
    fig.savefig(path)

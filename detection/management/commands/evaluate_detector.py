"""`manage.py evaluate_detector --train BENIGN.pcap --test TEST.pcap --labels LABELS.csv`: ROC AUC and TPR,
and at the model's calibrated threshold: benign packets flagged, false incidents per hour, attack recall
and whether (and how soon) an incident opens for each attack."""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from capture.choices import FeatureLevel, MlModel
from capture.pcapio import CaptureFileError
from capture.progress import BYTES, PACKETS, Progress, files_size
from capture.records import RECORD_DTYPE
from detection import calibration, evaluate, ml, plots, scoring, services
from detection.features import FeatureExtractor


def read_labels(path: str, n: int) -> tuple[np.ndarray, dict[int, str]]:
    """labels.csv (frame,label[,attack]) -> (attack code per frame, 0 benign; {code: attack name})."""
    codes = np.zeros(n, np.int16)
    names: dict[str, int] = {}
    try:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                frame = int(row["frame"])
                if not 1 <= frame <= n:
                    raise CommandError(f"{path}: frame {frame} is outside the capture (1..{n})")
                if int(row["label"]):
                    name = row.get("attack") or "attack"
                    codes[frame - 1] = names.setdefault(name, len(names) + 1)
    except (KeyError, ValueError) as exc:
        raise CommandError(f"{path}: expected columns frame,label[,attack] with integers ({exc})") from None
    return codes, {code: name for name, code in names.items()}


def format_report(report: dict) -> str:
    lines = []
    for name, block in [("overall", report["overall"]), *report["per_attack"].items()]:
        rates = "  ".join(f"TPR@{k[4:]} FPR {v:.3f}" for k, v in block.items() if k.startswith("tpr@"))
        lines.append(f"{name:>14}: ROC AUC {block['auc']:.4f}  {rates}  (n={block['n']:,})")
    return "\n".join(lines)


def format_threshold(model: ml.AnomalyModel, at: dict) -> str:
    """The figures at the model's threshold: how it was set, benign flagged, false incidents, per attack."""
    benign = at["benign"]
    lines = [
        f"threshold {at['threshold']:.4g}: {calibration.summary(model.calibration)}",
        f"{'benign':>14}: {benign['flagged']:.3%} of {benign['n']:,} packets flagged, "
        f"{benign['incidents']} false incidents in {benign['seconds']:,.0f} s = "
        f"{benign['incidents_per_hour']:.3g} per hour",
    ]
    for name, block in at["per_attack"].items():
        opened = f"incident opened after {block['delay']:.2f} s" if block["opened"] else "no incident opened"
        recall = f"recall {block['recall']:.3f} at the threshold"
        lines.append(f"{name:>14}: {recall}, {opened} (n={block['n']:,})")
    return "\n".join(lines)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: use a number greater than 0 (false incidents per day)")
    return value


def _plot_path(text: str) -> Path:
    """--plot's check, at parse time: a bad path fails before the training, not after it."""
    try:
        return plots.check_plot_path(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _json_ready(value):
    """NaN and infinity are not JSON: null."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Command(BaseCommand):
    help = (
        "Train on a benign capture, score a labeled one, print ROC AUC (overall, per attack) and TPR, "
        "and at the calibrated threshold: benign flagged, false incidents per hour, attack recall and delay."
    )

    def add_arguments(self, parser):
        parser.add_argument("--train", nargs="+", required=True)
        parser.add_argument("--test", required=True)
        parser.add_argument("--labels", required=True)
        parser.add_argument("--model", choices=ml.MODEL_KINDS, default=MlModel.BOTH)
        parser.add_argument("--feature-level", choices=FeatureLevel.values, default=FeatureLevel.ADVANCED)
        parser.add_argument(
            "--false-incidents-per-day",
            type=_positive,
            metavar="N",
            help="the threshold's calibration target (default: NETMON_FALSE_INCIDENTS_PER_DAY)",
        )
        parser.add_argument("--json", type=Path, metavar="PATH", help="also write every figure to this file")
        parser.add_argument(
            "--plot",
            type=_plot_path,
            metavar="PATH",
            help="draw ROC and precision-recall curves per attack, with the threshold's operating point, "
            f"to this picture ({', '.join('.' + f for f in plots.PLOT_FORMATS)})",
        )

    def handle(self, *args, **opts):
        level = opts["feature_level"]
        target = opts["false_incidents_per_day"] or settings.NETMON_FALSE_INCIDENTS_PER_DAY

        def phase(label: str, total: float, unit: str) -> Progress:
            return Progress.for_command(
                f"evaluate_detector: {label}", self.stdout, opts["verbosity"], total=total, unit=unit
            )

        try:
            with phase("training data", files_size(opts["train"]), BYTES) as progress:
                chunks = services.records_from_pcaps(opts["train"], progress)
                X_train, train_records = services.featurise(chunks, level)
            progress.note(f"evaluate_detector: fitting {opts['model']} on {len(X_train):,} packets")
            model = ml.train_model(opts["model"], X_train, FeatureExtractor(level).names, train_records,
                                   level=level, false_incidents_per_day=target)  # fmt: skip
            with phase("test data", files_size([opts["test"]]), BYTES) as progress:
                test_records = list(services.records_from_pcaps([opts["test"]], progress))
        except ml.TrainingError as exc:
            raise CommandError(f"training refused: {exc}") from None
        except (CaptureFileError, OSError) as exc:
            raise CommandError(str(exc)) from None
        started = time.perf_counter()
        # as live scoring does: one feature state, through scoring's one code path
        extractor = FeatureExtractor(level)
        state = extractor.new_state()
        chunks = [chunk for chunk in test_records if len(chunk)]
        parts = []
        with phase("scoring", sum(len(chunk) for chunk in chunks), PACKETS) as progress:
            for chunk in chunks:
                parts.append(scoring.score_records(model, extractor, chunk, state)[1])
                progress.advance(len(chunk))
        scores = np.concatenate([np.zeros(0), *parts])
        records = np.concatenate(chunks) if chunks else np.zeros(0, RECORD_DTYPE)
        rate = len(scores) / max(time.perf_counter() - started, 1e-9)
        codes, names = read_labels(opts["labels"], len(scores))
        report = evaluate.evaluate(codes, scores, names=names)
        at = evaluate.at_threshold(
            codes, scores, records["ts"], calibration.client_entities(records), model.threshold, names
        )
        self.stdout.write(
            f"model {opts['model']} at {level}: trained on {len(X_train):,}, tested on {len(scores):,}"
        )
        self.stdout.write(format_report(report))
        self.stdout.write(format_threshold(model, at))
        self.stdout.write(f"scoring: {rate:,.0f} packets/s (feature extraction included)")
        if opts["json"]:
            figures = {
                "model": opts["model"], "feature_level": level, "trained_on": len(X_train),
                "tested_on": len(scores), "threshold": model.threshold, "calibration": model.calibration,
                "ranking": report, "at_threshold": at, "scoring_packets_per_second": rate,
            }  # fmt: skip
            opts["json"].write_text(json.dumps(_json_ready(figures), indent=1))
        if opts["plot"]:
            title = (
                f"evaluate_detector: {opts['model']} at {level}, trained on {len(X_train):,} packets, "
                f"tested on {len(scores):,} ({Path(opts['test']).name})"
            )
            try:
                plots.plot_evaluation(opts["plot"], codes, scores, names, model.threshold, title)
            except OSError as exc:  # the directory went away or filled up since the check
                raise CommandError(f"--plot: cannot write {opts['plot']}: {exc}") from None
            self.stdout.write(f"plot: {opts['plot']}")

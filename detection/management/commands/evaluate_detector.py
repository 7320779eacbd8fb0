"""`manage.py evaluate_detector --train BENIGN.pcap --test TEST.pcap --labels LABELS.csv`: ROC AUC and TPR."""

from __future__ import annotations

import csv
import time

import numpy as np
from django.core.management.base import BaseCommand, CommandError

from capture.choices import FeatureLevel, MlModel
from capture.pcapio import CaptureFileError
from detection import evaluate, ml, scoring, services
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


class Command(BaseCommand):
    help = "Train on a benign capture, score a labeled one, print ROC AUC (overall, per attack) and TPR."

    def add_arguments(self, parser):
        parser.add_argument("--train", nargs="+", required=True)
        parser.add_argument("--test", required=True)
        parser.add_argument("--labels", required=True)
        parser.add_argument("--model", choices=ml.MODEL_KINDS, default=MlModel.BOTH)
        parser.add_argument("--feature-level", choices=FeatureLevel.values, default=FeatureLevel.ADVANCED)

    def handle(self, *args, **opts):
        level = opts["feature_level"]
        try:
            X_train, _ = services.featurise(services.records_from_pcaps(opts["train"]), level)
            model = ml.train_model(opts["model"], X_train, FeatureExtractor(level).names, level=level)
            test_records = list(services.records_from_pcaps([opts["test"]]))
        except ml.TrainingError as exc:
            raise CommandError(f"training refused: {exc}") from None
        except (CaptureFileError, OSError) as exc:
            raise CommandError(str(exc)) from None
        started = time.perf_counter()
        # as live scoring does: one feature state, cold statistics replaced by the model's medians
        extractor = FeatureExtractor(level)
        state = extractor.new_state()
        parts = [scoring.score_records(model, extractor, records, state)[1] for records in test_records]
        scores = np.concatenate([np.zeros(0), *parts])
        rate = len(scores) / max(time.perf_counter() - started, 1e-9)
        codes, names = read_labels(opts["labels"], len(scores))
        report = evaluate.evaluate(codes, scores, names=names)
        self.stdout.write(
            f"model {opts['model']} at {level}: trained on {len(X_train):,}, tested on {len(scores):,}"
        )
        self.stdout.write(format_report(report))
        self.stdout.write(f"scoring: {rate:,.0f} packets/s (feature extraction included)")

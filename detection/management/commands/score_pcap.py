"""`manage.py score_pcap FILE --out scores.csv`: frame,score,is_anomaly per packet, as live scoring does."""

from __future__ import annotations

import csv
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from capture import services as capture_services
from capture.pcapio import CaptureFileError
from detection import ml, scoring, services
from detection.features import FeatureExtractor
from detection.models import DetectionModel


class Command(BaseCommand):
    help = "Score every packet of a capture with the active model (or --model-id), in file order."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--out", type=Path, required=True)
        parser.add_argument("--model-id", type=int, help="a DetectionModel id (default: the model in use)")

    def handle(self, *args, file: str, out: Path, model_id: int | None, **opts):
        row = self._model_row(model_id)
        if reason := services.outdated_reason(row):
            raise CommandError(reason)
        model = ml.load_model(row.artifact_path)
        extractor = FeatureExtractor(row.feature_level)
        state = extractor.new_state()
        frame = 0
        try:
            with open(out, "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["frame", "score", "is_anomaly"])
                for records in services.records_from_pcaps([file]):
                    _, scores = scoring.score_records(model, extractor, records, state)
                    flags = scores > model.threshold
                    writer.writerows(
                        (frame + i + 1, f"{s:.6g}", int(f))
                        for i, (s, f) in enumerate(zip(scores, flags, strict=True))
                    )
                    frame += len(records)
        except (CaptureFileError, OSError) as exc:
            raise CommandError(f"{file}: {exc}") from None
        self.stdout.write(f"{file}: scored {frame:,} packets with {row.kind} v{row.version} -> {out}")

    def _model_row(self, model_id: int | None) -> DetectionModel:
        if model_id is not None:
            row = DetectionModel.objects.filter(pk=model_id, status=DetectionModel.Status.READY).first()
            if row is None:
                raise CommandError(f"no ready model with id {model_id}")
            return row
        current = scoring._models.current()
        if current is None:
            kind = capture_services.get_config().ml_model
            active = DetectionModel.objects.filter(
                kind=kind, is_active=True, status=DetectionModel.Status.READY
            )
            stale = active.first()
            raise CommandError((stale and services.outdated_reason(stale)) or services.no_model_reason(kind))
        return current[0]

"""`manage.py train_detector`: train a detector on capture files or stored packets, and activate it."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from capture import services as capture_services
from capture.choices import FeatureLevel
from capture.progress import BYTES, PACKETS, Progress, files_size
from detection import calibration, ml, services
from detection.models import DetectionModel


class Command(BaseCommand):
    help = (
        "Train a model (isolation_forest, autoencoder or both) on benign traffic and make it the active one."
    )

    def add_arguments(self, parser):
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--pcap", nargs="+", metavar="FILE", help="benign capture files")
        source.add_argument("--since", help="train on stored packets from this ISO time")
        source.add_argument(
            "--demo", type=int, metavar="N", help="train on N packets of the demo generator's normal traffic"
        )
        parser.add_argument(
            "--demo-rate",
            type=float,
            metavar="PPS",
            help="with --demo: the packets/s of the `capture --demo` the model is for (default: its default)",
        )
        parser.add_argument("--until", help="with --since: up to this ISO time")
        parser.add_argument("--sensor", help="with --since: only this sensor's packets")
        parser.add_argument("--model", choices=ml.MODEL_KINDS, help="default: the configured ml_model")
        parser.add_argument("--feature-level", choices=FeatureLevel.values,
                            help="default: the configured feature_level")  # fmt: skip
        activation = parser.add_mutually_exclusive_group()
        activation.add_argument("--no-activate", action="store_true", help="keep the current active version")
        activation.add_argument(
            "--use",
            action="store_true",
            help="then make the configuration use it (ml_model and feature_level): the way to switch to "
            "a kind that has no active model yet",
        )
        parser.add_argument(
            "--if-none", action="store_true", help="do nothing when a version of this kind is active already"
        )

    def handle(self, *args, **opts):
        config = capture_services.get_config()
        kind = opts["model"] or config.ml_model
        level = opts["feature_level"] or config.feature_level
        if opts["if_none"]:
            active = DetectionModel.objects.filter(kind=kind, is_active=True).first()
            if active is not None and not (reason := services.outdated_reason(active)):
                self.stdout.write(f"an active {kind} model exists; nothing to train")
                return
            if active is not None:
                self.stdout.write(f"{reason}; training a new one")

        def reading(total: int | None = None, unit: str = PACKETS) -> Progress:
            return Progress.for_command(
                "train_detector", self.stdout, opts["verbosity"], total=total, unit=unit
            )

        if opts["demo"]:
            source = f"demo traffic ({opts['demo']:,} packets)"
            progress = reading(opts["demo"])
            chunks = services.records_from_demo(opts["demo"], rate=opts["demo_rate"], progress=progress)
        elif opts["pcap"]:
            progress = reading(files_size(opts["pcap"]), BYTES)
            source, chunks = ", ".join(opts["pcap"]), services.records_from_pcaps(opts["pcap"], progress)
        else:
            since, until = (
                parse_datetime(opts["since"]),
                parse_datetime(opts["until"]) if opts["until"] else None,
            )
            if since is None or (opts["until"] and until is None):
                raise CommandError("--since/--until take ISO 8601 times, e.g. 2026-01-31T12:00:00Z")
            source = f"stored packets {opts['since']} .. {opts['until'] or 'now'}"
            progress = reading()  # counting the rows first would cost as much as reading them
            chunks = services.records_from_database(since, until, opts["sensor"], progress)
        row = services.create_training(kind, level, source)

        def stage(fraction: float) -> None:
            # services.train's milestones: 0.4 when the data is read and featurised and fitting starts
            if fraction == services.TRAIN_FIT_STAGE:
                progress.close()
                progress.note(f"train_detector: fitting {kind} on {progress.packets:,} packets")

        try:
            # --use activates it whatever the configured feature_level, then configures its level
            row = services.train(
                row, chunks, activate=not (opts["no_activate"] or opts["use"]), progress=stage
            )
            if opts["use"]:
                services.activate_model(row, force_level=True)
        except ml.TrainingError as exc:
            raise CommandError(f"training refused: {exc}") from None
        except services.ActivationError as exc:
            raise CommandError(f"trained, but not activated: {exc}") from None
        except Exception as exc:  # unreadable capture and the like: one line, not a traceback
            raise CommandError(f"training failed: {exc}") from None
        finally:
            progress.close()  # a bar left running would garble the terminal
        state = "active" if row.is_active else "not activated"
        if opts["use"]:
            config, change = capture_services.update_config(
                {"ml_model": row.kind, "feature_level": row.feature_level}, source="train_detector"
            )
            if change is not None:
                capture_services.announce_config(config)
        else:
            config = capture_services.get_config()
        state += ", " + services.in_use_text(row, config)
        used = row.metrics.get("false_positives_used")
        marked = "" if used is None else f"; {used:,} packets marked as false positives learnt as normal"
        self.stdout.write(
            f"trained {row.kind} v{row.version} at {row.feature_level} on {row.packet_count:,} packets in "
            f"{row.training_seconds:.1f} s; threshold {row.threshold:.4g}; {state}{marked}"
        )
        self.stdout.write(f"threshold: {calibration.summary(row.metrics.get('calibration', {}))}")

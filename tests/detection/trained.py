"""A model as ``train_detector --pcap ... --use`` leaves it, trained once per test process.

Most tests that need a trained model test what the model does, not the training: fitting the same
model on the same packets for each of them cost seconds to a minute apiece. The first test to ask
runs the command; later ones get what it left: the same row (a new one, the database was rolled
back or flushed), a copy of its artifacts in their own model directory (the kept ones stay
untouched), and the configuration using it, as the command sets it. Tests of the training itself
run the command.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.core.management import call_command

from capture import services as capture_services
from detection import services
from detection.models import DetectionModel

_TRAINED: dict[tuple[str, ...], dict[str, object]] = {}  # the command's arguments -> the row's fields


def trained_with(options: tuple[str, ...], benign_pcap: Callable[[], Path]) -> DetectionModel:
    """The active model of ``train_detector --pcap BENIGN *options --use`` in this test's
    ``NETMON_MODEL_DIR``; ``benign_pcap()`` writes the capture when the command must run."""
    if options not in _TRAINED:
        call_command("train_detector", "--pcap", str(benign_pcap()), *options, "--use")
        row = DetectionModel.objects.get(is_active=True, pk=DetectionModel.objects.latest("pk").pk)
        fields = {f.attname: getattr(row, f.attname) for f in row._meta.concrete_fields if f.name != "id"}
        # a copy of its own: a test may change the artifacts it was given (as if an older version)
        keep = Path(tempfile.mkdtemp(prefix="netmon-trained-"))
        atexit.register(shutil.rmtree, keep, ignore_errors=True)
        fields["artifact_path"] = str(shutil.copytree(row.artifact_path, keep / Path(row.artifact_path).name))
        _TRAINED[options] = fields
        return row
    fields = dict(_TRAINED[options], is_active=False)
    artifacts = Path(settings.NETMON_MODEL_DIR) / Path(str(fields["artifact_path"])).name
    shutil.copytree(str(fields["artifact_path"]), artifacts)
    fields["artifact_path"] = str(artifacts)
    row = services.activate_model(DetectionModel.objects.create(**fields), force_level=True)
    config, change = capture_services.update_config(
        {"ml_model": row.kind, "feature_level": row.feature_level}, source="train_detector"
    )
    if change is not None:
        capture_services.announce_config(config)
    return row

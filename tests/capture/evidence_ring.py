"""Filling an evidence ring in tests as capture does: a capture file's frames, numbered."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from capture.evidence import EvidenceRing
from capture.pcapio import ReadStats
from capture.sources import pcap_chunks


def feed(ring: EvidenceRing, path: Path, first_seq: int = 1, batch: int = 1000) -> int:
    """Append a capture's frames to the ring, numbered from ``first_seq``; returns the next seq."""
    seq = first_seq
    for chunk in pcap_chunks(str(path), ReadStats(), batch):
        records = chunk.records
        records["seq"] = np.arange(seq, seq + len(records))
        ring.append(records, chunk.frames)
        seq += len(records)
    return seq


def write(path: Path, pieces: Iterable[bytes]) -> Path:
    with open(path, "wb") as handle:
        for piece in pieces:
            handle.write(piece)
    return path

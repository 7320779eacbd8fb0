"""Evidence pcap: the raw frames capture read, kept in a rolling on-disk ring per sensor, and carved.

The capture process (``CaptureRunner.consume``, the one place sequence numbers are assigned) hands
each numbered batch with its raw frames to the sensor's ``EvidenceRing``, which appends them to the
current *segment*: a classic libpcap file (little-endian, microsecond timestamps, the frames'
original link type) named after its first sequence number, ``<dir>/<sensor>/<first seq>.pcap``.
Beside it, ``<first seq>.idx`` holds one fixed-size ``INDEX_DTYPE`` row per frame (seq, time, byte
offset of the record in the segment, captured length, addresses, ports), appended in the same call.

Why index files beside the segments rather than a database table: the ring is written by the
capture process on its hot path, where a database round trip per batch would cost more than the
write itself, and the segment and its index are created, aged out and deleted together (one
``unlink`` pair), so they cannot disagree; the web process and the export worker read the same
directory. A reader ignores index rows whose record lies beyond the segment's current size, so a
segment being written (or cut short by a crash) is read as far as it is complete.

Bounds: a segment is closed when it reaches ``segment_bytes`` (a sixteenth of the ring, 1 to 64
MiB), when it has been open ``segment_seconds`` (a 24th of the age bound, at least 10 s), or when the
link type changes (a classic pcap has one). Closed segments are deleted, oldest first, while the
ring is over ``max_bytes`` (segments and indexes counted) or when their last write is older than
``max_age``. Aging goes by wall clock, not by packet time: a replayed 2019 capture is kept as long
as live traffic.

Failure: any OSError writing (a full disk, an unwritable directory) turns the ring off with the
reason; capture goes on without evidence, the heartbeat says so (``status()``: ``/api/status`` and
``/metrics``), frames not kept are counted, and the ring tries again every ``RETRY_SECONDS``.

Carving (``select`` then ``iter_pcap``; ``carve`` does both) reads the indexes, picks the frames
matching the sequence numbers and/or the time range, address and port, and streams one classic
pcap of their record bytes exactly as captured. ``EvidenceGone`` says why nothing can be answered
(aged out, never kept).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from capture.pcapio import FrameBatch
from capture.records import ip_to_bytes

log = logging.getLogger(__name__)

INDEX_DTYPE = np.dtype(
    [
        ("seq", "<u8"),
        ("ts", "<f8"),
        ("offset", "<u8"),  # where the record (its 16-byte header) starts in the segment
        ("caplen", "<u4"),
        ("ip_version", "u1"),
        ("proto", "u1"),
        ("src_ip", "u1", (16,)),
        ("dst_ip", "u1", (16,)),
        ("sport", "<u2"),
        ("dport", "<u2"),
    ]
)
PCAP_HEADER = struct.Struct("<IHHiIII")
PCAP_MAGIC_US = 0xA1B2C3D4
SNAPLEN = 262144
RETRY_SECONDS = 30.0
PRUNE_SECONDS = 10.0
_READ_GAP = 64 * 1024  # frames closer than this in a segment are read in one go
_READ_CHUNK = 4 * 1024 * 1024


def pcap_header(linktype: int) -> bytes:
    """The 24-byte classic pcap file header (little-endian, microseconds) for ``linktype``."""
    return PCAP_HEADER.pack(PCAP_MAGIC_US, 2, 4, 0, 0, SNAPLEN, linktype)


def sensor_dir(directory: str | os.PathLike[str], sensor: str) -> Path:
    """The ring directory of one sensor; ValueError for a name that is not one path component.

    Sensor names (capture.validation) are letters, digits, ``_ . -``: only ``.`` and ``..`` could
    leave the evidence directory.
    """
    if sensor in {"", ".", ".."} or "/" in sensor or "\\" in sensor or "\x00" in sensor:
        raise ValueError(f"sensor {sensor!r} cannot name an evidence ring")
    return Path(directory) / sensor


@dataclass
class Segment:
    """One segment file of a ring and its index, as found on disk."""

    first_seq: int
    pcap: Path
    index: Path

    @property
    def size(self) -> int:
        try:
            return self.pcap.stat().st_size + self.index.stat().st_size
        except OSError:
            return 0

    def mtime(self) -> float:
        try:
            return self.pcap.stat().st_mtime
        except OSError:
            return 0.0

    def rows(self) -> np.ndarray:
        """Index rows whose records are wholly in the segment (one being written is read so far)."""
        try:
            raw = self.index.read_bytes()
            size = self.pcap.stat().st_size
        except OSError:
            return np.zeros(0, dtype=INDEX_DTYPE)
        rows = np.frombuffer(raw, dtype=INDEX_DTYPE, count=len(raw) // INDEX_DTYPE.itemsize)
        if len(rows) and int(rows["offset"][-1]) + 16 + int(rows["caplen"][-1]) > size:
            rows = rows[rows["offset"] + 16 + rows["caplen"] <= size]
        return rows

    def last_seq(self) -> int | None:
        """The sequence number of its last indexed frame (one row read), None when it has none."""
        try:
            with open(self.index, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                whole = size - size % INDEX_DTYPE.itemsize
                if not whole:
                    return None
                handle.seek(whole - INDEX_DTYPE.itemsize)
                return int(np.frombuffer(handle.read(INDEX_DTYPE.itemsize), dtype=INDEX_DTYPE)["seq"][0])
        except OSError:
            return None

    def linktype(self) -> int:
        with open(self.pcap, "rb") as handle:
            head = handle.read(PCAP_HEADER.size)
        return PCAP_HEADER.unpack(head)[6] if len(head) == PCAP_HEADER.size else -1


def list_segments(directory: str | os.PathLike[str], sensor: str) -> list[Segment]:
    """The sensor's segments, oldest (lowest first seq) first; an absent directory has none."""
    root = sensor_dir(directory, sensor)
    try:
        names = os.listdir(root)
    except OSError:
        return []
    out = []
    for name in names:
        stem, _dot, ext = name.partition(".")
        if ext == "pcap" and stem.isdigit():
            out.append(Segment(int(stem), root / name, root / f"{stem}.idx"))
    out.sort(key=lambda s: s.first_seq)
    return out


def ring_sensors(directory: str | os.PathLike[str]) -> list[str]:
    """The sensors with at least one segment in the ring directory."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [n for n in names if list_segments(directory, n)]


# --- writing (the capture process) ---------------------------------------------------------------


@dataclass
class _Open:
    segment: Segment
    linktype: int
    pcap: Any
    index: Any
    size: int  # bytes of the pcap file
    opened: float
    index_size: int = 0


class EvidenceRing:
    """The sensor's ring: ``append`` numbered records with their frames; bounded by size and age.

    Never raises into capture: an OSError turns it off (``state``/``reason``), retried later.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        sensor: str,
        *,
        max_bytes: int,
        max_age: float,
        next_seq: int = 1,
        segment_bytes: int | None = None,
        segment_seconds: float | None = None,
        clock=time.time,
    ) -> None:
        self.directory = Path(directory)
        try:
            self.root = sensor_dir(directory, sensor)
        except ValueError as exc:  # no ring outside the directory: evidence off, with the reason
            self.root, max_bytes = self.directory, 0
            off_reason = str(exc)
        else:
            off_reason = "turned off (NETMON_EVIDENCE_MAX_MB or _MAX_AGE_HOURS is 0)"
        self.sensor = sensor
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.segment_bytes = segment_bytes or min(64 << 20, max(1 << 20, max_bytes // 16))
        self.segment_seconds = segment_seconds or max(10.0, max_age / 24)
        self.clock = clock
        self.enabled = max_bytes > 0 and max_age > 0
        self.state = "on" if self.enabled else "off"
        self.reason = "" if self.enabled else off_reason
        self.frames_kept = 0
        self.frames_not_kept = 0
        self.segments_deleted = 0
        self._current: _Open | None = None
        self._closed: list[tuple[Segment, int]] = []  # (segment, bytes), oldest first
        self._retry_at = 0.0
        self._prune_at = 0.0
        if self.enabled:
            self._start(next_seq)

    # -- life cycle --
    def _start(self, next_seq: int) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise PermissionError(13, "Permission denied", str(self.root))
            self._closed = []
            for seg in list_segments(self.directory, self.sensor):
                last = seg.last_seq()
                if seg.first_seq >= next_seq or (last is not None and last >= next_seq):
                    # numbered before a reset of the sensor's numbers (a new database): not ours any more
                    self._delete(seg)
                else:
                    self._closed.append((seg, seg.size))
            self._prune()
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        if self.state != "failed":
            log.warning("evidence ring of %s is off, capture goes on without it: %s", self.sensor, exc)
        self.state = "failed"
        self.reason = f"cannot write {self.root}: {exc.strerror or exc}"
        self._retry_at = self.clock() + RETRY_SECONDS
        cur, self._current = self._current, None
        if cur is not None:
            for handle in (cur.pcap, cur.index):
                with contextlib.suppress(OSError):
                    handle.close()
            self._closed.append((cur.segment, cur.segment.size))

    def close(self) -> None:
        """Close the current segment (capture's exit)."""
        if self._current is not None:
            self._close_current()

    # -- appending --
    def append(self, records: np.ndarray, frames: list[FrameBatch], skip: int = 0) -> None:
        """Keep the frames of numbered ``records`` (frame ``skip + i`` of ``frames`` is record ``i``)."""
        n = len(records)
        if not self.enabled or not n:
            return
        if self.state == "failed":
            if self.clock() < self._retry_at:
                self.frames_not_kept += n
                return
            self.state, self.reason = "on", ""
            self._start(int(records["seq"][0]))
            if self.state == "failed":
                self.frames_not_kept += n
                return
        if not frames:
            # a source that hands records without their frames (every source here has them)
            self.frames_not_kept += n
            self.state, self.reason = "off", "the capture source gives no raw frames"
            return
        if self.state == "off":
            self.state, self.reason = "on", ""
        try:
            pos = 0
            for batch in frames:
                lo, hi = max(skip - pos, 0), min(skip + n - pos, len(batch))
                if lo < hi:
                    self._write(records[pos + lo - skip : pos + hi - skip], batch, lo, hi)
                pos += len(batch)
                if pos >= skip + n:
                    break
        except OSError as exc:
            self.frames_not_kept += n
            self._fail(exc)

    def _write(self, records: np.ndarray, batch: FrameBatch, lo: int, hi: int) -> None:
        linktypes = batch.linktype[lo:hi]
        if len(batch.linktypes) == 1:  # one interface (pcap, dumpcap, demo): one link type
            self._write_run(records, batch, lo, hi, int(linktypes[0]))
            return
        # one link type per segment: split the slice where it changes (pcapng, several interfaces)
        cuts = np.flatnonzero(linktypes[1:] != linktypes[:-1]) + 1
        start = 0
        for end in [*cuts.tolist(), hi - lo]:
            self._write_run(records[start:end], batch, lo + start, lo + end, int(linktypes[start]))
            start = end

    def _write_run(self, records: np.ndarray, batch: FrameBatch, lo: int, hi: int, linktype: int) -> None:
        now = self.clock()
        cur = self._current
        if cur is not None and (
            cur.linktype != linktype
            or cur.size + cur.index_size >= self.segment_bytes
            or now - cur.opened >= self.segment_seconds
        ):
            self._close_current()
            cur = None
        if cur is None:
            cur = self._open(int(records["seq"][0]), linktype, now)
        m = hi - lo
        caplen = batch.caplen[lo:hi]
        offsets = batch.offsets[lo:hi]
        ts = batch.ts[lo:hi]
        rec_len = caplen.astype(np.int64) + 16
        rec_start = np.empty(m, dtype=np.int64)
        rec_start[0] = 0
        np.cumsum(rec_len[:-1], out=rec_start[1:])
        first = int(offsets[0])
        data: Any
        if batch.le_usec_records and bool(np.all(offsets[1:] - offsets[:-1] == rec_len[:-1])):
            # a classic little-endian microsecond pcap (a replayed file, dumpcap's pipe): its records
            # are what a segment holds, back to back; written as they are, without a copy
            data = memoryview(batch.buf)[first - 16 : int(offsets[-1]) + int(caplen[-1])]
        else:
            data = self._records(batch, lo, hi, rec_start)
        rows = np.empty(m, dtype=INDEX_DTYPE)  # every field is set below
        rows["seq"] = records["seq"]
        rows["ts"] = ts
        rows["offset"] = rec_start + cur.size
        rows["caplen"] = caplen
        for name in ("ip_version", "proto", "src_ip", "dst_ip", "sport", "dport"):
            rows[name] = records[name]
        cur.pcap.write(data)
        cur.pcap.flush()
        cur.index.write(rows.tobytes())
        cur.index.flush()
        cur.size += len(data)
        cur.index_size += rows.nbytes
        self.frames_kept += m

    @staticmethod
    def _records(batch: FrameBatch, lo: int, hi: int, rec_start: np.ndarray) -> bytes:
        """Frames ``lo:hi`` of ``batch`` as classic pcap records (16-byte header, then the frame)."""
        m = hi - lo
        caplen = batch.caplen[lo:hi]
        offsets = batch.offsets[lo:hi]
        ts = batch.ts[lo:hi]
        sec = np.floor(ts)
        usec = np.round((ts - sec) * 1_000_000)
        carry = usec >= 1_000_000
        heads = np.empty((m, 4), dtype="<u4")
        heads[:, 0] = (sec + carry).astype(np.int64).astype(np.uint32)
        heads[:, 1] = np.where(carry, 0, usec).astype(np.uint32)
        heads[:, 2] = caplen
        heads[:, 3] = batch.length[lo:hi]
        out = np.empty(int(rec_start[-1]) + 16 + int(caplen[-1]), dtype=np.uint8)
        out[(rec_start[:, None] + np.arange(16)).ravel()] = heads.view(np.uint8).ravel()
        src = np.frombuffer(batch.buf, dtype=np.uint8)
        for o, c, r in zip(offsets.tolist(), caplen.tolist(), rec_start.tolist(), strict=True):
            out[r + 16 : r + 16 + c] = src[o : o + c]
        return out.data

    def _open(self, first_seq: int, linktype: int, now: float) -> _Open:
        stem = f"{first_seq:020d}"
        seg = Segment(first_seq, self.root / f"{stem}.pcap", self.root / f"{stem}.idx")
        pcap = open(seg.pcap, "wb")  # noqa: SIM115 - closed by _close_current
        try:
            pcap.write(pcap_header(linktype))
            index = open(seg.index, "wb")  # noqa: SIM115 - closed by _close_current
        except OSError:
            pcap.close()
            seg.pcap.unlink(missing_ok=True)
            raise
        self._current = _Open(seg, linktype, pcap, index, PCAP_HEADER.size, now)
        return self._current

    def _close_current(self) -> None:
        cur, self._current = self._current, None
        assert cur is not None
        cur.pcap.close()
        cur.index.close()
        self._closed.append((cur.segment, cur.segment.size))
        self._prune()

    # -- bounds --
    def _delete(self, seg: Segment) -> None:
        seg.index.unlink(missing_ok=True)
        seg.pcap.unlink(missing_ok=True)
        self.segments_deleted += 1

    def _prune(self) -> None:
        """Delete closed segments, oldest first, while over the size bound or past the age bound.

        Room for a whole segment is kept beside the closed ones: the one being written grows into it.
        """
        now = self.clock()
        total = self.segment_bytes + sum(size for _, size in self._closed)
        while self._closed:
            seg, size = self._closed[0]
            if total <= self.max_bytes and now - seg.mtime() < self.max_age:
                break
            self._closed.pop(0)
            self._delete(seg)
            total -= size

    def prune(self) -> None:
        """Apply the age bound now (called while the source is idle: a quiet sensor rotates nothing)."""
        now = self.clock()
        if self.state != "on" or now < self._prune_at:
            return
        self._prune_at = now + PRUNE_SECONDS
        try:
            cur = self._current
            if cur is not None and self.clock() - cur.opened >= self.segment_seconds:
                self._close_current()
            else:
                self._prune()
        except OSError as exc:
            self._fail(exc)

    def status(self) -> dict[str, Any]:
        """What the heartbeat carries (``/api/status`` and ``/metrics`` show it)."""
        cur = self._current
        size = sum(size for _, size in self._closed) + (cur.size + cur.index_size if cur else 0)
        return {
            "state": self.state,
            "reason": self.reason,
            "bytes": size,
            "segments": len(self._closed) + (1 if self._current else 0),
            "frames_kept": self.frames_kept,
            "frames_not_kept": self.frames_not_kept,
            "max_bytes": self.max_bytes,
            "max_age_seconds": self.max_age,
        }


def ring_from_settings(sensor: str, next_seq: int) -> EvidenceRing:
    """The sensor's ring as configured (NETMON_EVIDENCE_DIR, _MAX_MB, _MAX_AGE_HOURS)."""
    from django.conf import settings

    return EvidenceRing(
        settings.NETMON_EVIDENCE_DIR,
        sensor,
        max_bytes=settings.NETMON_EVIDENCE_MAX_MB * (1 << 20),
        max_age=settings.NETMON_EVIDENCE_MAX_AGE_HOURS * 3600.0,
        next_seq=next_seq,
    )


# --- carving (web process, export worker) ------------------------------------------------------


class EvidenceGone(Exception):
    """None of the asked-for frames can be answered; the message says why (the API's 410)."""


@dataclass
class Selection:
    """The frames a query matched, per segment, in segment order; ``iter_pcap`` streams them."""

    sensor: str
    linktype: int = 1
    parts: list[tuple[Path, np.ndarray, np.ndarray]] = field(default_factory=list)  # (pcap, offsets, caplen)
    frames: int = 0
    other_linktype: int = 0  # matched frames left out: another link type than the file's

    def iter_pcap(self) -> Iterator[bytes]:
        """The carved pcap: file header, then the matched records as captured, in pieces of a few MiB."""
        yield pcap_header(self.linktype)
        for path, offsets, caplen in self.parts:
            yield from _read_records(path, offsets, caplen)


def _read_records(path: Path, offsets: np.ndarray, caplen: np.ndarray) -> Iterator[bytes]:
    starts = offsets.astype(np.int64)
    ends = starts + 16 + caplen.astype(np.int64)
    n = len(starts)
    if not n:
        return
    # one read per run of nearby records (at most _READ_CHUNK apart from its start)
    gap = np.empty(n, dtype=bool)
    gap[0] = True
    gap[1:] = (starts[1:] - ends[:-1] > _READ_GAP) | (starts[1:] < ends[:-1])
    span = np.cumsum(gap) - 1
    span_start = starts[gap][span]
    sub = (ends - span_start - 1) // _READ_CHUNK
    brk = gap.copy()
    brk[1:] |= sub[1:] != sub[:-1]
    bounds = [*np.flatnonzero(brk).tolist(), n]
    with open(path, "rb") as handle:
        fd = handle.fileno()
        for a, b in itertools.pairwise(bounds):
            lo, hi = int(starts[a]), int(ends[b - 1])
            block = os.pread(fd, hi - lo, lo)
            if len(block) < hi - lo:
                return  # the segment was cut short or deleted meanwhile: what is there is answered
            if int((ends[a:b] - starts[a:b]).sum()) == hi - lo:
                yield block
            else:
                mv = memoryview(block)
                yield b"".join(
                    mv[s - lo : e - lo] for s, e in zip(starts[a:b].tolist(), ends[a:b].tolist(), strict=True)
                )


def _match(
    rows: np.ndarray,
    seqs: np.ndarray | None,
    since: float | None,
    until: float | None,
    ip: bytes | None,
    port: int | None,
) -> np.ndarray:
    mask = np.ones(len(rows), dtype=bool)
    if seqs is not None:
        mask &= np.isin(rows["seq"], seqs, assume_unique=False)
    if since is not None:
        mask &= rows["ts"] >= since
    if until is not None:
        mask &= rows["ts"] < until
    if ip is not None:
        want = np.frombuffer(ip, dtype=np.uint8)
        mask &= (rows["src_ip"] == want).all(axis=1) | (rows["dst_ip"] == want).all(axis=1)
    if port is not None:
        mask &= (rows["sport"] == port) | (rows["dport"] == port)
    return mask


def select(
    directory: str | os.PathLike[str],
    sensor: str,
    *,
    seqs: np.ndarray | list[int] | None = None,
    since: float | None = None,
    until: float | None = None,
    ip: str | None = None,
    port: int | None = None,
) -> Selection:
    """The frames of ``sensor`` still in the ring that match every given criterion.

    ``seqs``: sequence numbers (an incident's packets); ``since``/``until``: epoch seconds
    (``since`` inclusive, ``until`` exclusive); ``ip``: either end; ``port``: either end.
    Raises EvidenceGone when nothing matched because the frames are no longer (or never were) kept.
    """
    segments = list_segments(directory, sensor)
    if not segments:
        raise EvidenceGone(
            f"the evidence ring of sensor {sensor!r} holds no frames: evidence is off for it, it has not "
            "captured since evidence was on, or everything aged out (NETMON_EVIDENCE_MAX_MB, "
            "NETMON_EVIDENCE_MAX_AGE_HOURS)"
        )
    wanted = None if seqs is None else np.unique(np.asarray(seqs, dtype=np.uint64))
    if wanted is not None and not len(wanted):
        raise EvidenceGone("no packets are recorded for it, so there are no frames to answer")
    want_ip = ip_to_bytes(ip) if ip is not None else None
    selection = Selection(sensor)
    linktype = None
    for i, seg in enumerate(segments):
        if wanted is not None:
            next_first = segments[i + 1].first_seq if i + 1 < len(segments) else None
            if int(wanted[-1]) < seg.first_seq or (next_first is not None and int(wanted[0]) >= next_first):
                continue  # none of the seqs can be in this segment: its index is not read
        rows = seg.rows()
        if not len(rows):
            continue
        mask = _match(rows, wanted, since, until, want_ip, port)
        count = int(np.count_nonzero(mask))
        if not count:
            continue
        seg_linktype = seg.linktype()
        if linktype is None:
            linktype = seg_linktype
        if seg_linktype != linktype:
            selection.other_linktype += count
            continue
        hit = rows[mask]
        selection.parts.append((seg.pcap, hit["offset"].copy(), hit["caplen"].copy()))
        selection.frames += count
    selection.linktype = 1 if linktype is None else linktype
    if selection.frames == 0:
        _explain_nothing(sensor, segments[0], wanted, until)
    return selection


def _explain_nothing(sensor: str, oldest: Segment, wanted: np.ndarray | None, until: float | None) -> None:
    """Raise EvidenceGone when an empty answer is because frames aged out or were not kept."""
    limits = "NETMON_EVIDENCE_MAX_MB, NETMON_EVIDENCE_MAX_AGE_HOURS"
    if wanted is not None:
        if int(wanted[-1]) < oldest.first_seq:
            raise EvidenceGone(
                f"its frames have aged out of the evidence ring of sensor {sensor!r} (it keeps packets "
                f"from #{oldest.first_seq} on; {limits})"
            )
        raise EvidenceGone(
            f"none of its frames are in the evidence ring of sensor {sensor!r}: they aged out or were "
            "not kept (the ring was off or could not write when they were captured)"
        )
    rows = oldest.rows()
    if until is not None and len(rows) and until <= float(rows["ts"].min()):
        from datetime import UTC, datetime

        first = datetime.fromtimestamp(float(rows["ts"].min()), UTC).isoformat()
        raise EvidenceGone(
            f"frames before {first} have aged out of the evidence ring of sensor {sensor!r} ({limits})"
        )
    # otherwise: the kept window was searched and nothing matched, an empty pcap is the answer


def resolve_sensor(directory: str | os.PathLike[str], sensor: str | None) -> str:
    """The sensor a query is about: the one named, else the only one keeping evidence.

    Raises ValueError (the ``sensor`` parameter's 400) when several keep evidence and none is named,
    EvidenceGone when none does.
    """
    if sensor is not None:
        return sensor
    sensors = ring_sensors(directory)
    if len(sensors) == 1:
        return sensors[0]
    if not sensors:
        raise EvidenceGone("no sensor keeps evidence frames (evidence is off, or everything aged out)")
    raise ValueError(f"several sensors keep evidence; name one of: {', '.join(sensors)}")


def carve(directory: str | os.PathLike[str], sensor: str, **criteria: Any) -> Iterator[bytes]:
    """``select`` then its pcap bytes (raises EvidenceGone before yielding anything)."""
    return select(directory, sensor, **criteria).iter_pcap()


def kept(directory: str | os.PathLike[str], sensor: str, seqs: np.ndarray | list[int]) -> bool:
    """Cheap check whether any of ``seqs`` may still be in the ring (for showing a download button).

    Compares with the ring's sequence range only (no index is read): true when the newest of the
    seqs is not older than the ring's oldest segment.
    """
    if not len(seqs):
        return False
    segments = list_segments(directory, sensor)
    return bool(segments) and int(max(seqs)) >= segments[0].first_seq

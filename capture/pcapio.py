"""Reading capture files and dumpcap's pcap stream into batches of raw frames.

Formats: pcap (either byte order, microsecond or nanosecond timestamps), pcapng (sections of
either byte order, several interfaces with their own link type, ``if_tsresol`` and
``if_tsoffset``; EPB, SPB and the obsolete PB; other block types are skipped), and gzip-compressed
versions of both. The format is recognised by its magic number, never by the file name, and the
input is only ever read forward, so a pipe (``dumpcap -P -w -``) works as well as a file.

Public API:

- ``iter_frame_batches(source, batch_size=4096, *, stats=None, live=False) -> Iterator[FrameBatch]``
  reads a path, bytes or binary file object. ``live=True`` uses ``read1`` and hands out whatever
  complete frames have arrived instead of waiting for a full batch (for pipes).
- ``FrameReader``: the push parser underneath, for ``select()``-driven loops: ``feed(data)``,
  ``take(max_frames, partial)``, ``close()``.
- ``FrameBatch``: frames as parallel NumPy arrays (``ts``, ``linktype``, ``iface``, ``length``,
  ``caplen``, ``offsets``) over one shared bytes buffer, plus the interface names/link types.
- ``ReadStats``: frames read, truncated and bad records with per-reason counts.
- ``CaptureFileError``: the input is not a capture at all (garbage, wrong magic, empty, header
  cut short). Damage after a valid header never raises: it is counted in ``ReadStats``, the file
  is read as far as it can be, and reading stops cleanly where it cannot continue.

Frame headers are located with a tight ``struct`` loop (record lengths chain the offsets, so that
part is inherently sequential) and the per-frame fields are then gathered with NumPy.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "MAX_CAPLEN",
    "CaptureFileError",
    "FrameBatch",
    "FrameReader",
    "ReadStats",
    "iter_frame_batches",
]

# Wireshark refuses records above this for ordinary link types; so do we, because a record
# length beyond it means the record header is garbage and the file cannot be followed further.
MAX_CAPLEN = 262144
# A pcapng block larger than this is taken to be garbage (same reasoning).
MAX_BLOCK = 16 * 1024 * 1024
# Timestamps a datetime can hold (years 1 to 9999). pcapng's 64-bit tick counts and offsets can
# say anything; beyond these the database and the API cannot store or show a packet's time.
TS_MIN, TS_MAX = -62135596800.0, 253402300799.0
# Decompressed bytes produced per step, so a highly compressed file cannot blow up memory.
_INFLATE_STEP = 4 * 1024 * 1024
_MAX_DETAILS = 20

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000, "pcap"),
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000, "pcap"),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000, "pcap-ns"),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000, "pcap-ns"),
}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_GZIP_MAGIC = b"\x1f\x8b"
_KUZNETZOV = (b"\x34\xcd\xb2\xa1", b"\xa1\xb2\xcd\x34")

_SHB, _IDB, _PB, _SPB, _EPB = 0x0A0D0D0A, 1, 2, 3, 6
_PB_HEADER = "H2xIIII"  # obsolete packet block: interface id (16 bits), drops (skipped), EPB's fields


class CaptureFileError(Exception):
    """The input is not a readable capture (one-line message naming the source)."""


@dataclass
class ReadStats:
    """What happened while reading one source; updated as batches are produced."""

    source: str = ""
    format: str = ""  # "pcap", "pcap-ns" or "pcapng", with "+gzip" when compressed
    frames: int = 0
    captured_bytes: int = 0
    truncated: int = 0  # records cut short by the end of the input
    bad_records: int = 0  # records/blocks that are not valid (skipped, or reading stopped)
    skipped_blocks: int = 0  # pcapng blocks of types we do not read (not an error)
    reasons: Counter[str] = field(default_factory=Counter)
    details: list[str] = field(default_factory=list)  # first few problems, with offsets
    stopped_early: bool = False  # reading stopped before the end of the input
    # Bytes of the input as stored (compressed, if so) behind the frames handed out so far: where
    # reading is in the file, for progress and its ETA (capture/progress.py); not in as_dict.
    input_bytes: int = 0

    def _problem(self, kind: str, reason: str, detail: str) -> None:
        if kind == "truncated":
            self.truncated += 1
        else:
            self.bad_records += 1
        self.reasons[reason] += 1
        if len(self.details) < _MAX_DETAILS:
            self.details.append(detail)

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "format": self.format,
            "frames": self.frames,
            "captured_bytes": self.captured_bytes,
            "truncated": self.truncated,
            "bad_records": self.bad_records,
            "skipped_blocks": self.skipped_blocks,
            "reasons": dict(self.reasons),
            "stopped_early": self.stopped_early,
        }


@dataclass(eq=False)
class FrameBatch:
    """A batch of frames: parallel arrays over one buffer (frame i is ``buf[offsets[i]:][:caplen[i]]``)."""

    buf: bytes
    offsets: np.ndarray  # int64, start of each frame's bytes in buf
    caplen: np.ndarray  # uint32, bytes captured
    length: np.ndarray  # uint32, original length on the wire
    ts: np.ndarray  # float64, seconds since the epoch
    linktype: np.ndarray  # uint16, LINKTYPE_* of the frame's interface
    iface: np.ndarray  # uint16, index into ``interfaces``
    interfaces: list[str]
    linktypes: list[int]  # link type of each interface
    # True when the buffer holds classic little-endian microsecond pcap records: frame i's record
    # header is the 16 bytes before it, as capture's evidence ring writes them (copied as they are)
    le_usec_records: bool = False

    def __len__(self) -> int:
        return len(self.offsets)

    def frame(self, i: int) -> bytes:
        start = int(self.offsets[i])
        return self.buf[start : start + int(self.caplen[i])]

    def slice(self, lo: int, hi: int) -> FrameBatch:
        """Frames ``lo:hi`` (the same buffer, no copy)."""
        return FrameBatch(
            self.buf,
            self.offsets[lo:hi],
            self.caplen[lo:hi],
            self.length[lo:hi],
            self.ts[lo:hi],
            self.linktype[lo:hi],
            self.iface[lo:hi],
            self.interfaces,
            self.linktypes,
            self.le_usec_records,
        )

    @property
    def frames(self) -> list[bytes]:
        buf = self.buf
        return [buf[o : o + c] for o, c in zip(self.offsets.tolist(), self.caplen.tolist(), strict=True)]

    @classmethod
    def empty(cls) -> FrameBatch:
        z = np.zeros(0)
        return cls(
            b"",
            z.astype(np.int64),
            z.astype(np.uint32),
            z.astype(np.uint32),
            z,
            z.astype(np.uint16),
            z.astype(np.uint16),
            [""],
            [1],
        )


def _gather_rows(buf: bytes, starts: np.ndarray, width: int) -> np.ndarray:
    """Rows of ``width`` bytes starting at ``starts`` (all inside buf), as an (n, width) uint8 array."""
    arr = np.frombuffer(buf, dtype=np.uint8)
    return sliding_window_view(arr, width)[starts]


class FrameReader:
    """Push parser for pcap/pcapng (optionally gzip-compressed) bytes arriving in pieces.

    ``feed`` bytes as they come, ``take`` batches of complete frames, ``close`` at the end of the
    input (which accounts for a cut-short last record). Header errors raise CaptureFileError.
    """

    def __init__(self, name: str = "", stats: ReadStats | None = None) -> None:
        self.stats = stats if stats is not None else ReadStats(source=name)
        if not self.stats.source:
            self.stats.source = name
        self.name = name or self.stats.source or "<capture>"
        self._buf = b""
        self._pos = 0  # start of unconsumed bytes in _buf
        self._scan = 0  # where the scan for the pending batch stopped
        self._pending: list[int] = []  # scanned but not yet handed out
        self._pending_fields: list[list[int]] = [[], [], [], [], []]  # pcapng: cap, orig, ts_hi, ts_lo, ifc
        self._seen = 0  # raw bytes fed so far
        self._eof = False
        self._stopped = False  # unrecoverable damage: ignore the rest
        self._finished = False
        self._kind = ""  # "", "pcap", "pcapng"
        self._gzip: zlib._Decompress | None = None  # type: ignore[name-defined]
        self._ztail = b""  # compressed bytes not yet inflated
        self._sniffed = False
        self._head = b""  # first raw bytes, until the magic is known
        # pcap state
        self._endian = "<"
        self._units = 1_000_000
        self._u32 = struct.Struct("<I")
        # interfaces, across all pcapng sections
        self.interfaces: list[str] = []
        self.linktypes: list[int] = []
        self._units_by_if: list[int] = []
        self._offset_by_if: list[int] = []
        self._snaplen_by_if: list[int] = []
        self._section: list[int] = []  # section-local interface id -> global index
        self._sections = 0  # pcapng section headers read
        self._structs: dict[str, struct.Struct] = {}

    # -- input -------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Add raw input bytes (compressed or not); raises CaptureFileError on a bad file header."""
        if not data or self._stopped:
            return
        self._seen += len(data)
        if not self._sniffed:
            self._head += data
            if len(self._head) < 4 and not self._eof:
                return
            data, self._head = self._head, b""
            self._sniffed = True
            if data[:2] == _GZIP_MAGIC:
                self._gzip = zlib.decompressobj(wbits=31)
        if self._gzip is not None:
            self._ztail += data
        else:
            self._append(bytes(data))

    def close(self) -> None:
        """End of input. Raises CaptureFileError if no valid file header was ever seen."""
        self._eof = True
        if not self._sniffed:
            if not self._head:
                raise CaptureFileError(f"{self.name}: empty file (0 bytes), not a capture")
            data, self._head = self._head, b""
            self._seen -= len(data)
            self.feed(data)
        self._inflate_all_needed()
        if not self._kind:
            self._parse_file_header()
            if not self._kind:
                have = len(self._buf) - self._pos
                after = " after gzip" if self._gzip is not None else ""
                magic = self._buf[self._pos : self._pos + 4]
                if magic == _PCAPNG_MAGIC:
                    raise CaptureFileError(
                        f"{self.name}: pcapng section header cut short ({have} bytes{after})"
                    )
                if magic in _PCAP_MAGICS:
                    raise CaptureFileError(
                        f"{self.name}: pcap file header cut short ({have} of 24 bytes{after})"
                    )
                raise CaptureFileError(f"{self.name}: too short to be a capture ({have} bytes{after})")

    def _append(self, data: bytes) -> None:
        if self._pos:
            shift = self._pos
            self._buf = self._buf[shift:] + data
            self._pos = 0
            self._scan -= shift
            if self._pending:
                self._pending = [p - shift for p in self._pending]
        else:
            self._buf = self._buf + data if self._buf else data
        if not self._kind:
            self._parse_file_header()

    def _inflate(self) -> bool:
        """Inflate one step of compressed input into the buffer; False when nothing came out."""
        z = self._gzip
        if z is None or self._stopped:
            return False
        try:
            while True:
                if z.eof:
                    rest = z.unused_data + self._ztail
                    self._ztail = b""
                    if not rest.strip(b"\x00"):
                        return False  # nothing, or padding after the last member
                    # another gzip member follows (concatenated .gz files are valid)
                    z = self._gzip = zlib.decompressobj(wbits=31)
                    self._ztail = rest
                    continue
                if z.unconsumed_tail:
                    chunk = z.unconsumed_tail
                else:
                    chunk, self._ztail = self._ztail, b""
                # an empty chunk still flushes output zlib held back because of max_length
                produced = z.decompress(chunk, _INFLATE_STEP)
                if produced:
                    self._append(produced)
                    return True
                if not chunk and not z.eof:
                    return False
        except zlib.error as exc:
            if not self._kind:
                raise CaptureFileError(f"{self.name}: unreadable gzip data ({exc})") from None
            self.stats._problem("bad", "corrupt compressed data", f"{self.name}: corrupt gzip data: {exc}")
            self._stop()
            return False

    def _inflate_all_needed(self) -> None:
        # At close we only need enough output to decide about the header; the rest is inflated
        # lazily by take().
        while not self._kind and self._inflate():
            pass

    def _stop(self) -> None:
        self._stopped = True
        self.stats.stopped_early = True
        self._ztail = b""

    # -- headers -----------------------------------------------------------------------------

    def _parse_file_header(self) -> None:
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            return
        magic = buf[pos : pos + 4]
        suffix = "+gzip" if self._gzip is not None else ""
        if magic in _PCAP_MAGICS:
            if len(buf) - pos < 24:
                return
            endian, units, fmt = _PCAP_MAGICS[magic]
            _, _, _, _, snaplen, network = struct.unpack_from(endian + "HHiIII", buf, pos + 4)
            self._endian, self._units = endian, units
            self._u32 = struct.Struct(endian + "I")
            self._kind = "pcap"
            self.stats.format = fmt + suffix
            self._add_interface("", network & 0xFFFF, 6 if units == 1_000_000 else 9, 0, snaplen)
            self._pos = self._scan = pos + 24
        elif magic == _PCAPNG_MAGIC:
            if len(buf) - pos < 12:
                return
            bom = buf[pos + 8 : pos + 12]
            if bom not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
                raise CaptureFileError(f"{self.name}: pcapng section header has a bad byte-order magic")
            self._kind = "pcapng"
            self.stats.format = "pcapng" + suffix
            self._scan = pos
        elif magic[:2] == _GZIP_MAGIC and self._gzip is not None:
            raise CaptureFileError(f"{self.name}: gzip inside gzip is not a capture")
        elif magic in _KUZNETZOV:
            raise CaptureFileError(f"{self.name}: modified (Kuznetzov) pcap format is not supported")
        else:
            raise CaptureFileError(
                f"{self.name}: not a pcap or pcapng file (starts with 0x{magic.hex()}"
                f"{', after gzip' if suffix else ''})"
            )

    def _add_interface(self, name: str, linktype: int, tsresol: int, tsoffset: int, snaplen: int) -> int:
        # if_tsresol: high bit clear -> 10^-n seconds, set -> 2^-n seconds (capped to what a
        # 64-bit tick count can mean: 2^-64 and beyond overflowed NumPy's uint64 and crashed reading)
        units = (1 << min(tsresol & 0x7F, 63)) if tsresol & 0x80 else 10 ** min(tsresol, 18)
        self.interfaces.append(name)
        self.linktypes.append(linktype)
        self._units_by_if.append(max(units, 1))
        self._offset_by_if.append(tsoffset)
        self._snaplen_by_if.append(snaplen)
        return len(self.interfaces) - 1

    # -- scanning ----------------------------------------------------------------------------

    def take(self, max_frames: int, partial: bool = True) -> FrameBatch | None:
        """Up to ``max_frames`` complete frames, or None.

        With ``partial=False`` a batch is only returned once it is full (or at the end of the
        input), so files yield evenly sized batches; pipes use ``partial=True``.
        """
        if max_frames < 1:
            raise ValueError("max_frames must be at least 1")
        while True:
            if self._stopped:
                break
            if self._kind == "pcap":
                self._scan_pcap(max_frames)
            elif self._kind == "pcapng":
                self._scan_pcapng(max_frames)
            full = len(self._pending) >= max_frames
            if full or self._stopped:
                break
            # need more bytes: inflate what we already hold, if compressed
            if self._gzip is not None and self._inflate():
                continue
            if self._eof:
                self._finish()
                break
            if not partial:
                return None
            break
        if not self._pending:
            return None
        return self._emit()

    def _scan_pcap(self, max_frames: int) -> None:
        buf = self._buf
        n = len(buf)
        pos = self._scan
        pending = self._pending
        append = pending.append
        unpack = self._u32.unpack_from
        room = max_frames - len(pending)
        while room > 0 and pos + 16 <= n:
            (incl,) = unpack(buf, pos + 8)
            if incl > MAX_CAPLEN:
                self.stats._problem(
                    "bad",
                    "record length over limit",
                    f"{self.name}: record at offset {self._offset_of(pos)} claims {incl} bytes "
                    f"(limit {MAX_CAPLEN}); cannot continue",
                )
                self._stop()
                break
            end = pos + 16 + incl
            if end > n:
                break
            append(pos)
            pos = end
            room -= 1
        self._scan = pos

    def _struct(self, fmt: str) -> struct.Struct:
        s = self._structs.get(fmt)
        if s is None:
            s = self._structs[fmt] = struct.Struct(fmt)
        return s

    def _scan_pcapng(self, max_frames: int) -> None:
        buf = self._buf
        n = len(buf)
        pos = self._scan
        pending = self._pending
        caps, origs, ts_hi, ts_lo, ifcs = self._pending_fields
        e = self._endian
        two = self._struct(e + "II")
        one = self._struct(e + "I")
        epb = self._struct(e + "IIIII")
        pb = self._struct(e + _PB_HEADER)
        room = max_frames - len(pending)
        section = self._section
        while room > 0 and pos + 12 <= n:
            btype, blen = two.unpack_from(buf, pos)
            if btype == _SHB:
                bom = buf[pos + 8 : pos + 12]
                if bom == b"\x4d\x3c\x2b\x1a":
                    e = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    e = ">"
                else:
                    self._bad_block(pos, "bad section header", "byte-order magic is wrong")
                    self._stop()
                    break
                if blen < 28 and not self._sections:
                    raise CaptureFileError(f"{self.name}: pcapng section header is invalid (length {blen})")
                two = self._struct(e + "II")
                one = self._struct(e + "I")
                epb = self._struct(e + "IIIII")
                pb = self._struct(e + _PB_HEADER)
                (blen,) = one.unpack_from(buf, pos + 4)
            if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                if not self._sections:
                    raise CaptureFileError(f"{self.name}: pcapng section header is invalid (length {blen})")
                self._bad_block(pos, "bad block length", f"block length {blen}; cannot continue")
                self._stop()
                break
            end = pos + blen
            if end > n:
                break
            (trailer,) = one.unpack_from(buf, end - 4)
            if trailer != blen:
                self._bad_block(pos, "block length mismatch", f"trailing length {trailer} != {blen}")
            # (not ``btype in (...)``: per packet, an EPB costs one comparison, as it did alone)
            if btype == _EPB or btype == _PB:  # noqa: SIM109
                # The obsolete packet block is an enhanced one with a 16-bit interface id (and a
                # drops count, skipped): the same header size and the same checks.
                if blen < 32:
                    what = "enhanced packet block" if btype == _EPB else "packet block"
                    self._bad_block(pos, "bad packet block", f"{what} too short")
                else:
                    iid, hi, lo, cap, orig = (epb if btype == _EPB else pb).unpack_from(buf, pos + 8)
                    if 28 + cap > blen - 4:
                        self._bad_block(pos, "bad packet block", f"captured length {cap} exceeds its block")
                    elif cap > MAX_CAPLEN:  # as for pcap records (Wireshark refuses it too)
                        self._bad_block(pos, "record length over limit", f"captured length {cap}")
                    elif iid >= len(section):
                        self._bad_block(pos, "unknown interface", f"packet for undeclared interface {iid}")
                    else:
                        pending.append(pos + 28)
                        caps.append(cap)
                        origs.append(orig)
                        ts_hi.append(hi)
                        ts_lo.append(lo)
                        ifcs.append(section[iid])
                        room -= 1
            elif btype == _SPB:
                (orig,) = one.unpack_from(buf, pos + 8)
                cap = min(orig, self._snaplen_by_if[section[0]] or orig) if section else 0
                if not section:
                    self._bad_block(pos, "unknown interface", "simple packet block before any interface")
                elif cap > blen - 16:
                    # (it used to take the block's padding for packet bytes; Wireshark refuses it)
                    self._bad_block(pos, "bad packet block", f"captured length {cap} exceeds its block")
                else:
                    pending.append(pos + 12)
                    caps.append(cap)
                    origs.append(orig)
                    ts_hi.append(0)
                    ts_lo.append(0)
                    ifcs.append(section[0])
                    room -= 1
            elif btype == _IDB:
                if blen < 20:
                    self._bad_block(pos, "bad interface block", "interface description block too short")
                else:
                    section.append(self._parse_idb(buf, pos, blen, e))
            elif btype == _SHB:
                self._endian = e
                self._sections += 1
                section = self._section = []
            else:
                self.stats.skipped_blocks += 1
            pos = end
        self._endian = e
        self._scan = pos

    def _parse_idb(self, buf: bytes, pos: int, blen: int, e: str) -> int:
        linktype, _reserved, snaplen = struct.unpack_from(e + "HHI", buf, pos + 8)
        name, tsresol, tsoffset = "", 6, 0
        opt, end = pos + 16, pos + blen - 4
        while opt + 4 <= end:
            code, olen = struct.unpack_from(e + "HH", buf, opt)
            value = buf[opt + 4 : opt + 4 + olen]
            if code == 0 or opt + 4 + olen > end:
                break
            if code == 2:
                name = value.rstrip(b"\x00").decode("utf-8", "replace")
            elif code == 9 and olen >= 1:
                tsresol = value[0]
            elif code == 14 and olen >= 8:
                (tsoffset,) = struct.unpack_from(e + "q", value)
            opt += 4 + ((olen + 3) & ~3)
        if not name:
            name = f"if{len(self.interfaces)}"
        return self._add_interface(name, linktype, tsresol, tsoffset, snaplen)

    def _bad_block(self, pos: int, reason: str, what: str) -> None:
        self.stats._problem("bad", reason, f"{self.name}: block at offset {self._offset_of(pos)}: {what}")

    def _offset_of(self, pos: int) -> str:
        # Offsets into the decompressed stream are not file offsets; say so rather than mislead.
        return f"~{pos}" if self._gzip is not None else str(pos)

    def _finish(self) -> None:
        """At the end of the input: account for bytes that do not form a complete record."""
        if self._finished:
            return
        self._finished = True
        if self._gzip is not None and not self._stopped and not self._gzip.eof:
            self.stats._problem(
                "truncated", "compressed stream ends early", f"{self.name}: gzip stream is cut short"
            )
        if self._stopped:
            return
        left = len(self._buf) - self._scan
        if left <= 0:
            return
        pos = self._scan
        if self._kind == "pcap":
            if left < 16:
                self.stats._problem(
                    "truncated",
                    "truncated record header",
                    f"{self.name}: last record header has {left} of 16 bytes",
                )
            else:
                (incl,) = self._u32.unpack_from(self._buf, pos + 8)
                self.stats._problem(
                    "truncated",
                    "truncated record",
                    f"{self.name}: last record promises {incl} bytes, input has {left - 16}",
                )
        elif self._kind == "pcapng":
            if not self._sections:
                raise CaptureFileError(f"{self.name}: pcapng section header cut short ({left} bytes)")
            self.stats._problem(
                "truncated", "truncated block", f"{self.name}: last block cut short ({left} bytes left)"
            )
        self.stats.stopped_early = True

    def _input_consumed(self) -> int:
        """Input bytes (as fed: compressed, if so) behind everything parsed so far."""
        if self._gzip is None:
            return self._seen - (len(self._buf) - self._pos)
        # compressed: what zlib has not taken yet is still ahead (inflated bytes are a step ahead)
        return self._seen - len(self._ztail) - len(self._gzip.unconsumed_tail)

    def _emit(self) -> FrameBatch:
        buf = self._buf
        pending = self._pending
        starts = np.array(pending, dtype=np.int64)
        if self._kind == "pcap":
            hdr = _gather_rows(buf, starts, 16)
            words = np.ascontiguousarray(hdr).view(self._endian + "u4")
            sec = words[:, 0].astype(np.float64)
            frac = words[:, 1].astype(np.float64)
            caplen = words[:, 2].astype(np.uint32)
            length = words[:, 3].astype(np.uint32)
            ts = sec + frac / self._units
            offsets = starts + 16
            iface = np.zeros(len(starts), dtype=np.uint16)
            linktype = np.full(len(starts), self.linktypes[0], dtype=np.uint16)
            le_usec = self._endian == "<" and self._units == 1_000_000
        else:
            caps, origs, ts_hi, ts_lo, ifcs = self._pending_fields
            offsets = starts
            caplen = np.array(caps, dtype=np.uint32)
            length = np.array(origs, dtype=np.uint32)
            iface = np.array(ifcs, dtype=np.uint16)
            raw = (np.array(ts_hi, dtype=np.uint64) << np.uint64(32)) | np.array(ts_lo, dtype=np.uint64)
            units = np.array(self._units_by_if, dtype=np.uint64)[iface]
            # split before converting: 64-bit tick counts do not fit a float exactly
            ts = (raw // units).astype(np.float64) + (raw % units).astype(np.float64) / units
            if any(self._offset_by_if):
                ts += np.array(self._offset_by_if, dtype=np.float64)[iface]
            np.clip(ts, TS_MIN, TS_MAX, out=ts)
            linktype = np.array(self.linktypes, dtype=np.uint16)[iface]
            self._pending_fields = [[], [], [], [], []]
            le_usec = False
        # An original length below the captured length is nonsense; trust what was captured.
        np.maximum(length, caplen, out=length)
        self._pos = self._scan
        self._pending = []
        self.stats.frames += len(starts)
        self.stats.captured_bytes += int(caplen.sum())
        self.stats.input_bytes = self._input_consumed()
        return FrameBatch(
            buf=buf,
            offsets=offsets,
            caplen=caplen,
            length=length,
            ts=ts,
            linktype=linktype,
            iface=iface,
            interfaces=list(self.interfaces),
            linktypes=list(self.linktypes),
            le_usec_records=le_usec,
        )


Source = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO


def _open(source: Source) -> tuple[BinaryIO, str, bool]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), "<bytes>", True
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            return open(path, "rb"), path, True  # the caller closes it
        except OSError as exc:
            raise CaptureFileError(f"{path}: cannot open ({exc.strerror or exc})") from None
    return source, getattr(source, "name", None) or "<stream>", False


def iter_frame_batches(
    source: Source,
    batch_size: int = 4096,
    *,
    stats: ReadStats | None = None,
    live: bool = False,
    chunk_size: int = 1 << 20,
) -> Iterator[FrameBatch]:
    """Frames of a capture file, bytes or binary stream, ``batch_size`` at a time.

    ``stats`` (created if not given) is updated as batches are produced. ``live=True`` is for
    pipes: it reads with ``read1`` and yields whatever complete frames have arrived.
    """
    fileobj, name, owned = _open(source)
    if isinstance(fileobj, io.TextIOBase):
        raise TypeError("iter_frame_batches needs a binary stream")
    if isinstance(name, int):
        name = f"<fd {name}>"
    reader = FrameReader(str(name), stats)
    read = getattr(fileobj, "read1", None) if live else None
    read = read or fileobj.read
    try:
        while True:
            while (batch := reader.take(batch_size, partial=live)) is not None:
                yield batch
            try:
                data = read(chunk_size)
            except OSError as exc:
                reader.stats._problem("bad", "read error", f"{reader.name}: read failed: {exc}")
                reader.stats.stopped_early = True
                data = b""
            if not data:
                break
            reader.feed(data)
        reader.close()
        while (batch := reader.take(batch_size, partial=True)) is not None:
            yield batch
    finally:
        if owned:
            fileobj.close()

"""Live capture engines: each yields ``Batch`` objects (capture/records.py) of decoded packets.

Public API:

- ``DumpcapEngine(interface, bpf="", snaplen=262144, *, sensor="", batch_size=4096, max_delay=0.5,
  first_seq=0)``: runs ``dumpcap -i IFACE -f BPF -s SNAPLEN -P -w - -q`` and decodes its pcap
  stream (capture.pcapio + capture.decode). ``start()`` raises ``CaptureUnavailable`` with one
  line when dumpcap is missing, the interface does not exist, permission is denied or the filter
  is invalid. Iterating (``batches()`` or ``iter(engine)``) yields a batch when ``batch_size``
  packets are in, or ``max_delay`` seconds after the first packet of a batch, and an EMPTY batch
  after ``max_delay`` seconds of silence, so the caller's loop can do its housekeeping.
  (Debian's dumpcap 4.0 has no ``-F pcap``; ``-P`` is the same request.)
- ``PysharkEngine(source, bpf="", *, sensor="", batch_size=1000, max_delay=0.5, first_seq=0,
  recycle_every=20000)``: deep mode. ``source`` is a capture file or an interface. pyshark runs
  tshark with ``use_ek=True`` (never the XML mode), ``-x`` and ``-J "frame dns http tls"``: the
  record fields come from the raw frame bytes through our own decoder (identical to the fast
  path), and ``Batch.app[seq]`` carries ``app_protocol`` (highest layer), ``dns_query``,
  ``http_host``, ``http_method``, ``tls_sni``. tshark grows in memory, so the capture is closed
  and reopened every ``recycle_every`` packets (files are split with editcap first; a live
  capture misses packets during tshark's restart). pyshark needs an event loop of its own: the
  engine creates one and refuses to run inside a running loop.
- ``list_interfaces() -> list[dict]`` (``name``, ``description``) from ``dumpcap -D``.
- ``compile_bpf(expr, interface="lo") -> None``: ValueError with dumpcap's reason when the filter
  does not compile (``dumpcap -d``, which prints the compiled program and captures nothing).
- ``CaptureUnavailable(reason)``: the engine cannot capture; ``str()`` is one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from capture.decode import decode_frames
from capture.pcapio import CaptureFileError, FrameBatch, FrameReader, ReadStats
from capture.records import APP_FIELDS, RECORD_DTYPE, Batch

__all__ = [
    "CaptureUnavailable",
    "DumpcapEngine",
    "PysharkEngine",
    "compile_bpf",
    "list_interfaces",
]

log = logging.getLogger(__name__)

DUMPCAP_MISSING = "dumpcap not found: install tshark (apt-get install tshark)"
TSHARK_MISSING = "tshark not found: install tshark (apt-get install tshark)"
_STDERR_KEEP = 16384


class CaptureUnavailable(RuntimeError):
    """Capture cannot start or continue; the message is one line an operator can act on."""

    def __init__(self, reason: str) -> None:
        reason = " ".join(reason.split()) or "capture failed"
        super().__init__(reason)
        self.reason = reason


def _find(tool: str, missing: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise CaptureUnavailable(missing)
    return path


def _explain(stderr: str, interface: str, bpf: str = "") -> str:
    """dumpcap/tshark's multi-line complaint -> one actionable line."""
    text = stderr.strip()
    low = text.lower()
    if (
        "no device named" in low
        or "no such device" in low
        or "doesn't exist" in low
        or "does not exist" in low
    ):
        return f"interface {interface!r} not found"
    if "permission" in low or "operation not permitted" in low:
        return (
            f"permission denied on {interface}: add the user to the wireshark group "
            "or run setcap cap_net_raw,cap_net_admin=eip on dumpcap"
        )
    if "invalid capture filter" in low or "isn't a valid capture filter" in low:
        inner = re.search(r"valid capture filter \((.*?)\)\.?\s*$", text, re.MULTILINE)
        why = inner.group(1) if inner else "syntax error"
        return f"invalid capture filter {bpf!r}: {why}"
    if "network is down" in low or "not up" in low:
        return f"interface {interface!r} is down"
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.startswith(("Capturing on", "File:", "Running as user"))
    ]
    return lines[0].removeprefix("dumpcap: ").removeprefix("tshark: ") if lines else "capture tool exited"


# ---------------------------------------------------------------------------------------------
# host queries

_DUMPCAP_LINE = re.compile(r"^\s*\d+\.\s+(\S+)(?:\s+\((.*)\))?\s*$")


def list_interfaces(timeout: float = 15.0) -> list[dict[str, str]]:
    """Interfaces dumpcap can capture on: ``[{"name": ..., "description": ...}]``."""
    dumpcap = _find("dumpcap", DUMPCAP_MISSING)
    try:
        result = subprocess.run([dumpcap, "-D"], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise CaptureUnavailable(f"dumpcap -D did not answer within {timeout:g}s") from None
    if result.returncode != 0:
        raise CaptureUnavailable(f"dumpcap -D failed: {_explain(result.stderr or result.stdout, '')}")
    out = []
    for line in result.stdout.splitlines():
        match = _DUMPCAP_LINE.match(line)
        if match:
            out.append({"name": match.group(1), "description": match.group(2) or ""})
    return out


def compile_bpf(expr: str, interface: str = "lo", timeout: float = 15.0) -> None:
    """Return if ``expr`` is a valid capture filter, else raise ValueError with dumpcap's reason.

    ``dumpcap -d`` compiles the filter for ``interface``'s link type and prints the program; it
    captures nothing. (dumpcap exits 0 even for a bad filter, so its output is what counts.)
    """
    if not expr.strip():
        return
    if "\x00" in expr or "\n" in expr:
        raise ValueError("invalid capture filter: contains a control character")
    dumpcap = _find("dumpcap", DUMPCAP_MISSING)
    try:
        result = subprocess.run(
            [dumpcap, "-d", "-f", expr, "-i", interface],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CaptureUnavailable(f"dumpcap -d did not answer within {timeout:g}s") from None
    if (
        re.search(r"^\(\d{3}\)", result.stdout, re.MULTILINE)
        and "invalid capture filter" not in result.stderr.lower()
    ):
        return
    reason = _explain(result.stderr, interface, expr)
    if reason.startswith("invalid capture filter"):
        inner = re.search(r": (.*)$", reason)
        raise ValueError(inner.group(1) if inner else reason)
    raise CaptureUnavailable(f"cannot check capture filter: {reason}")


# ---------------------------------------------------------------------------------------------
# dumpcap


def _empty_batch(sensor: str, interfaces: list[str]) -> Batch:
    return Batch(sensor=sensor, records=np.zeros(0, dtype=RECORD_DTYPE), interfaces=list(interfaces))


class DumpcapEngine:
    """Fast live capture: dumpcap writes pcap to a pipe, we decode it in batches."""

    def __init__(
        self,
        interface: str,
        bpf: str = "",
        snaplen: int = 262144,
        *,
        sensor: str = "",
        batch_size: int = 4096,
        max_delay: float = 0.5,
        first_seq: int = 0,
        dumpcap: str = "dumpcap",
        start_timeout: float = 10.0,
    ) -> None:
        self.interface = interface
        self.bpf = bpf
        self.snaplen = snaplen
        self.sensor = sensor
        self.batch_size = batch_size
        self.max_delay = max_delay
        self.next_seq = first_seq
        self.dumpcap = dumpcap
        self.start_timeout = start_timeout
        self.stats = ReadStats(source=f"dumpcap:{interface}")
        self.packets = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: FrameReader | None = None
        self._stderr = b""
        self._stopping = False

    @property
    def command(self) -> list[str]:
        cmd = [self.dumpcap, "-i", self.interface, "-s", str(self.snaplen), "-P", "-w", "-", "-q"]
        if self.bpf:
            cmd += ["-f", self.bpf]
        return cmd

    def start(self) -> None:
        """Start dumpcap and wait until its pcap header arrives (or it fails: CaptureUnavailable)."""
        if self.proc is not None:
            return
        exe = shutil.which(self.dumpcap)
        if exe is None:
            raise CaptureUnavailable(DUMPCAP_MISSING)
        cmd = self.command
        cmd[0] = exe
        self._stopping = False
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._reader = FrameReader(self.stats.source, self.stats)
        deadline = time.monotonic() + self.start_timeout
        try:
            while not self.stats.format:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CaptureUnavailable(
                        f"dumpcap did not start on {self.interface} within {self.start_timeout:g}s: "
                        f"{_explain(self._stderr.decode(errors='replace'), self.interface, self.bpf)}"
                    )
                if not self._pump(remaining):
                    self._raise_exit()
        except BaseException:
            self.stop()
            raise

    def _pump(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for output; feed it to the reader. False once stdout is closed."""
        proc = self.proc
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        out_fd = proc.stdout.fileno()
        err_fd = -1 if proc.stderr.closed else proc.stderr.fileno()
        fds = [out_fd] if err_fd < 0 else [out_fd, err_fd]
        ready, _, _ = select.select(fds, [], [], max(0.0, timeout))
        if err_fd in ready:
            chunk = os.read(err_fd, 65536)
            if chunk:
                self._stderr = (self._stderr + chunk)[-_STDERR_KEEP:]
            else:
                proc.stderr.close()
        if out_fd in ready:
            data = os.read(out_fd, 1 << 20)
            if not data:
                return False
            assert self._reader is not None
            try:
                self._reader.feed(data)
            except CaptureFileError as exc:
                raise CaptureUnavailable(f"dumpcap output unreadable: {exc}") from None
        return True

    def _raise_exit(self) -> None:
        proc = self.proc
        assert proc is not None
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.stderr is not None and not proc.stderr.closed:
            with contextlib.suppress(OSError, ValueError):
                self._stderr += proc.stderr.read()
        message = _explain(self._stderr.decode(errors="replace"), self.interface, self.bpf)
        raise CaptureUnavailable(message)

    def __iter__(self) -> Iterator[Batch]:
        return self.batches()

    def batches(self) -> Iterator[Batch]:
        """Decoded batches until stopped; empty batches while idle (every ``max_delay`` seconds)."""
        self.start()
        reader = self._reader
        assert reader is not None
        interfaces = [self.interface]
        parts: list[np.ndarray] = []
        count = 0
        first_at = 0.0  # monotonic time the oldest pending packet arrived
        read_at = 0.0
        idle_since = time.monotonic()
        eof = False
        try:
            while not eof:
                now = time.monotonic()
                wait = (first_at + self.max_delay - now) if count else (idle_since + self.max_delay - now)
                eof = not self._pump(wait)
                if eof:
                    with contextlib.suppress(CaptureFileError):
                        reader.close()
                while (frames := reader.take(self.batch_size - count or self.batch_size)) is not None:
                    if not count:
                        first_at, read_at = time.monotonic(), time.time()
                    parts.append(self._decode(frames))
                    count += len(frames)
                    if count >= self.batch_size:
                        yield self._batch(parts, interfaces, read_at)
                        parts, count = [], 0
                        idle_since = time.monotonic()
                now = time.monotonic()
                if count and (now - first_at >= self.max_delay or eof):
                    yield self._batch(parts, interfaces, read_at)
                    parts, count = [], 0
                    idle_since = now
                elif not count and now - idle_since >= self.max_delay and not eof:
                    yield _empty_batch(self.sensor, interfaces)
                    idle_since = now
            if not self._stopping:
                proc = self.proc
                assert proc is not None
                try:
                    code = proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    code = None
                if code != 0:
                    self._raise_exit()
        finally:
            self.stop()

    def _decode(self, frames: FrameBatch) -> np.ndarray:
        records = decode_frames(frames, self.next_seq)
        self.next_seq += len(records)
        self.packets += len(records)
        return records

    def _batch(self, parts: list[np.ndarray], interfaces: list[str], read_at: float) -> Batch:
        records = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return Batch(sensor=self.sensor, records=records, interfaces=list(interfaces), read_at=read_at)

    def stop(self) -> None:
        """Stop dumpcap (SIGTERM, then SIGKILL) and close its pipes."""
        self._stopping = True
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=3)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self.returncode = proc.returncode
        self.proc = None

    def __enter__(self) -> DumpcapEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# pyshark (deep mode)

# Wireshark's WTAP_ENCAP_* (frame.encap_type) -> LINKTYPE_* understood by capture.decode
_WTAP_TO_LINKTYPE = {1: 1, 7: 101, 15: 0, 25: 113, 174: 108, 210: 276}
_UNSUPPORTED_LINKTYPE = 65535
_BORING = {"data", "_ws.malformed", "_ws.short", "_ws.expert", "_ws.unreassembled", "_ws.lua"}
_APP_KEYS = {
    "dns_query": ("dns", "dns_dns_qry_name"),
    "http_host": ("http", "http_http_host"),
    "http_method": ("http", "http_http_request_method"),
    "tls_sni": ("tls", "tls_tls_handshake_extensions_server_name"),
}
MALFORMED = 10


def _first(value: Any) -> str:
    if isinstance(value, list):
        value = value[0] if value else ""
    return "" if value is None else str(value)


class PysharkEngine:
    """Deep dissection through pyshark/tshark (EK JSON): records plus application fields."""

    def __init__(
        self,
        source: str | os.PathLike[str],
        bpf: str = "",
        *,
        sensor: str = "",
        batch_size: int = 1000,
        max_delay: float = 0.5,
        first_seq: int = 0,
        recycle_every: int = 20_000,
        tshark_path: str | None = None,
    ) -> None:
        self.source = os.fspath(source)
        self.is_file = os.path.isfile(self.source)
        self.bpf = bpf
        self.sensor = sensor
        self.batch_size = batch_size
        self.max_delay = max_delay
        self.next_seq = first_seq
        self.recycle_every = recycle_every
        self.tshark_path = tshark_path
        self.packets = 0
        self.recycles = 0
        self.interfaces: list[str] = [] if self.is_file else [self.source]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._capture: Any = None
        self._task: asyncio.Task[Any] | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._stopped = False

    # -- pyshark plumbing --------------------------------------------------------------------

    def _check_loop(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        raise RuntimeError(
            "PysharkEngine cannot run inside a running asyncio event loop; run it in the capture process"
        )

    def _params(self) -> list[str]:
        # -J: only these protocols in the output (the rest of the tree is not serialised);
        # frame_raw (-x) gives the bytes our decoder turns into the record.
        return ["-J", "frame dns http tls"]

    def _open(self, path: str | None) -> Any:
        import pyshark  # only the capture process needs it

        assert self._loop is not None
        common: dict[str, Any] = {
            "use_ek": True,
            "include_raw": True,
            "eventloop": self._loop,
            "custom_parameters": self._params(),
            "tshark_path": self.tshark_path,
        }
        if path is not None:
            return pyshark.FileCapture(path, keep_packets=False, display_filter=None, **common)
        return pyshark.LiveCapture(interface=self.source, bpf_filter=self.bpf or None, **common)

    def _chunks(self) -> Iterator[str | None]:
        """Files: editcap splits them so tshark can be restarted; live: None forever."""
        if not self.is_file:
            while not self._stopped:
                yield None
            return
        editcap = shutil.which("editcap")
        if editcap is None or not self.recycle_every:
            log.warning("editcap not found: deep mode reads %s without recycling tshark", self.source)
            yield self.source
            return
        self._tmpdir = tempfile.TemporaryDirectory(prefix="netmon-deep-")
        out = Path(self._tmpdir.name) / ("chunk" + (".pcapng" if self._is_pcapng() else ".pcap"))
        result = subprocess.run(
            [editcap, "-c", str(self.recycle_every), self.source, str(out)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise CaptureUnavailable(f"cannot split {self.source}: {_explain(result.stderr, self.source)}")
        yield from sorted(str(p) for p in Path(self._tmpdir.name).iterdir())

    def _is_pcapng(self) -> bool:
        import gzip

        with open(self.source, "rb") as f:
            head = f.read(4)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(self.source, "rb") as g:
                head = g.read(4)
        return head == b"\x0a\x0d\x0d\x0a"

    # -- iteration ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Batch]:
        return self.batches()

    def batches(self) -> Iterator[Batch]:
        """Batches of deep-dissected packets; empty batches while a live capture is idle."""
        self._check_loop()
        if shutil.which(self.tshark_path or "tshark") is None:
            raise CaptureUnavailable(TSHARK_MISSING)
        self._stopped = False
        self._loop = asyncio.new_event_loop()
        pending: list[Any] = []
        try:
            for chunk in self._chunks():
                if self._stopped:
                    break
                yield from self._run_one(chunk, pending)
                self.recycles += 1
            if pending:
                yield self._make_batch(pending)
        finally:
            self.stop()

    def _run_one(self, path: str | None, pending: list[Any]) -> Iterator[Batch]:
        """One tshark process: up to ``recycle_every`` packets (live) or one file chunk."""
        loop = self._loop
        assert loop is not None
        capture = self._capture = self._open(path)
        received: list[Any] = []
        count = None if path is not None else self.recycle_every
        task = self._task = loop.create_task(capture.packets_from_tshark(received.append, packet_count=count))
        first_at = 0.0
        idle_since = time.monotonic()
        while True:
            now = time.monotonic()
            wait = (first_at + self.max_delay - now) if pending else (idle_since + self.max_delay - now)
            if not task.done():
                loop.run_until_complete(asyncio.wait([task], timeout=max(0.001, wait)))
            if received:
                if not pending:
                    first_at = time.monotonic()
                pending.extend(received)
                received.clear()
            while len(pending) >= self.batch_size:
                yield self._make_batch(pending[: self.batch_size])
                del pending[: self.batch_size]
                first_at = idle_since = time.monotonic()
            now = time.monotonic()
            if pending and now - first_at >= self.max_delay:
                yield self._make_batch(pending)
                pending.clear()
                idle_since = now
            elif not pending and now - idle_since >= self.max_delay and path is None and not task.done():
                yield _empty_batch(self.sensor, self.interfaces)
                idle_since = now
            if task.done():
                break
        self._task = None
        self._capture = None
        exc = task.exception()
        if exc is not None:
            last = getattr(capture, "_last_error_line", "") or str(exc)
            raise CaptureUnavailable(_explain(last, self.source, self.bpf)) from exc

    def _make_batch(self, packets: list[Any]) -> Batch:
        n = len(packets)
        read_at = time.time()
        raws: list[bytes] = []
        ts = np.zeros(n, dtype=np.float64)
        length = np.zeros(n, dtype=np.uint32)
        linktype = np.zeros(n, dtype=np.uint16)
        iface = np.zeros(n, dtype=np.uint16)
        malformed = np.zeros(n, dtype=bool)
        apps: list[dict[str, str]] = []
        for i, pkt in enumerate(packets):
            frame = pkt.frame_info._fields_dict
            raw_layer = None
            layers = {}
            for layer in pkt.layers:
                name = layer.layer_name
                if name == "frame_raw":
                    raw_layer = layer._fields_dict
                else:
                    layers[name] = layer._fields_dict
            raw = bytes.fromhex(_first(raw_layer)) if raw_layer else b""
            raws.append(raw)
            ts[i] = float(frame.get("frame_frame_time_epoch") or 0.0)
            length[i] = max(int(frame.get("frame_frame_len") or 0), len(raw))
            encap = int(frame.get("frame_frame_encap_type") or 0)
            linktype[i] = _WTAP_TO_LINKTYPE.get(encap, _UNSUPPORTED_LINKTYPE)
            name = _first(frame.get("frame_frame_interface_name"))
            if name in ("", "unknown"):  # what tshark calls a pcap file's only interface
                name = "" if self.is_file else self.source
            if name not in self.interfaces:
                self.interfaces.append(name)
            iface[i] = self.interfaces.index(name)
            protocols = str(frame.get("frame_frame_protocols") or "").split(":")
            malformed[i] = "_ws.malformed" in protocols
            app = {"app_protocol": ""}
            for proto in reversed(protocols):
                if proto and proto not in _BORING:
                    app["app_protocol"] = proto.upper()
                    break
            for key, (layer_name, field) in _APP_KEYS.items():
                fields = layers.get(layer_name)
                value = _first(fields.get(field)) if isinstance(fields, dict) else ""
                app[key] = value
            apps.append(app)
        caplen = np.array([len(r) for r in raws], dtype=np.uint32)
        offsets = np.zeros(n, dtype=np.int64)
        if n > 1:
            np.cumsum(caplen[:-1], out=offsets[1:])
        frames = FrameBatch(
            buf=b"".join(raws),
            offsets=offsets,
            caplen=caplen,
            length=length,
            ts=ts,
            linktype=linktype,
            iface=iface,
            interfaces=list(self.interfaces),
            linktypes=[],
        )
        records = decode_frames(frames, self.next_seq)
        records["status"][malformed & (records["status"] == 0)] = MALFORMED
        seqs = records["seq"].tolist()
        app_by_seq = {seq: {k: a.get(k, "") for k in APP_FIELDS} for seq, a in zip(seqs, apps, strict=True)}
        self.next_seq += n
        self.packets += n
        return Batch(
            sensor=self.sensor,
            records=records,
            interfaces=list(self.interfaces) or [""],
            app=app_by_seq,
            read_at=read_at,
        )

    def stop(self) -> None:
        """Stop tshark, close the event loop, remove temporary chunk files."""
        self._stopped = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            if self._task is not None and not self._task.done():
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    loop.run_until_complete(self._task)
            if self._capture is not None:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(self._capture.close_async())
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
        self._task = None
        self._capture = None
        self._loop = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> PysharkEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Capture engines: each yields ``Chunk`` objects (capture/records.py) of decoded packets.

The engines do not number packets: the capture runner numbers each chunk when it publishes it.
``Chunk.app`` is keyed by the packet's index in its chunk.

Public API:

- ``DumpcapEngine(interface, bpf="", snaplen=262144, *, batch_size=4096, max_delay=0.5)``: runs
  ``dumpcap -i IFACE -f BPF -s SNAPLEN -P -w - -q`` and decodes its pcap
  stream (capture.pcapio + capture.decode). ``start()`` raises ``CaptureUnavailable`` with one
  line when dumpcap is missing, the interface does not exist, permission is denied or the filter
  is invalid. Iterating (``chunks()`` or ``iter(engine)``) yields a chunk when ``batch_size``
  packets are in, or ``max_delay`` seconds after the first packet of a chunk, and an EMPTY chunk
  after ``max_delay`` seconds of silence, so the caller's loop can do its housekeeping.
  ``stop()`` from another thread terminates dumpcap; the iterating thread then cleans up.
  (Debian's dumpcap 4.0 has no ``-F pcap``; ``-P`` is the same request.)
- ``PysharkEngine(source, bpf="", *, batch_size=1000, max_delay=0.5, recycle_every=20000,
  processes=None, snaplen=262144, max_backlog=20000)``: deep mode.
  ``source`` is a capture file or an interface. The records come from our own reader and
  decoder (identical to the fast path); pyshark runs tshark in EK mode (``use_ek=True``, never
  the XML mode) with ``-e`` for just the fields deep mode adds, and ``Chunk.app[index]`` carries
  ``app_protocol`` (highest layer), ``dns_query``, ``http_host``, ``http_method``, ``tls_sni``
  for every packet tshark dissected (one a dissector found malformed gets status ``MALFORMED``,
  10, unless our decoder set one). Live, dumpcap captures (as in ``DumpcapEngine``; ``start()``
  fails the same way) and the engine writes the same pcap bytes to tshark's stdin (``tshark -r
  -``); a file is read by both. tshark grows in memory, so one tshark handles at most
  ``recycle_every`` packets: a file is cut into pieces with editcap (a small one into
  ``processes`` pieces) and ``processes`` tshark (default 2, 1 on one core) run at once, in
  order; live, the next tshark is started a little ahead and takes over without losing a packet.
  If a live tshark falls ``max_backlog`` packets behind, further packets are published without
  application fields (counted in ``app_skipped``). pyshark needs an event loop of its own: the
  engine creates one and refuses to run inside a running loop. ``stop()`` from another thread
  only asks; the iterating thread stops within a few milliseconds.
- ``CaptureUnavailable(reason)``: capture cannot start (no tool, no interface, no permission, bad
  filter); ``str()`` is one line. The one class for this: ``capture.sources.open_live`` raises it
  too, and the capture command falls back to demo mode on it.

The host's interface list and filter check are in ``capture.host``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import select
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from capture.decode import decode_frames
from capture.pcapio import CaptureFileError, FrameBatch, FrameReader, ReadStats, iter_frame_batches
from capture.records import APP_FIELDS, DECODE_ERROR_CODES, RECORD_DTYPE, Chunk

__all__ = ["CaptureUnavailable", "DumpcapEngine", "PysharkEngine"]

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
# dumpcap


def _empty_chunk(interfaces: list[str], source: str) -> Chunk:
    return Chunk(records=np.zeros(0, dtype=RECORD_DTYPE), interfaces=list(interfaces), source=source)


def _exited_cleanly(proc: subprocess.Popen[bytes]) -> bool:
    """After dumpcap's output ended: did it exit with status 0 (within 5 s)?"""
    try:
        return proc.wait(timeout=5) == 0
    except subprocess.TimeoutExpired:
        return False


class DumpcapEngine:
    """Fast live capture: dumpcap writes pcap to a pipe, we decode it in batches."""

    def __init__(
        self,
        interface: str,
        bpf: str = "",
        snaplen: int = 262144,
        *,
        batch_size: int = 4096,
        max_delay: float = 0.5,
        dumpcap: str = "dumpcap",
        start_timeout: float = 10.0,
    ) -> None:
        self.interface = interface
        self.bpf = bpf
        self.snaplen = snaplen
        self.batch_size = batch_size
        self.max_delay = max_delay
        self.dumpcap = dumpcap
        self.start_timeout = start_timeout
        self.stats = ReadStats(source=f"dumpcap:{interface}")
        self.packets = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: FrameReader | None = None
        self._stderr = b""
        self._stopping = False
        self._owner: int | None = None  # thread running chunks()
        self.on_data: Callable[[bytes], None] | None = None  # sees dumpcap's raw pcap bytes (deep mode)

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
        if err_fd in ready and not self._read_err():
            proc.stderr.close()
        if out_fd in ready:
            return self._read_out()
        return True

    def _read_err(self) -> bool:
        """Keep the tail of what dumpcap says on stderr; False at its end (the caller closes it)."""
        assert self.proc is not None and self.proc.stderr is not None
        chunk = os.read(self.proc.stderr.fileno(), 65536)
        if chunk:
            self._stderr = (self._stderr + chunk)[-_STDERR_KEEP:]
        return bool(chunk)

    def _read_out(self) -> bool:
        """Read what dumpcap wrote (stdout is readable) into the reader; False at its end."""
        assert self.proc is not None and self.proc.stdout is not None and self._reader is not None
        data = os.read(self.proc.stdout.fileno(), 1 << 20)
        if not data:
            return False
        if self.on_data is not None:
            self.on_data(data)
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

    def __iter__(self) -> Iterator[Chunk]:
        return self.chunks()

    def chunks(self) -> Iterator[Chunk]:
        """Decoded chunks until stopped; empty chunks while idle (every ``max_delay`` seconds)."""
        self.start()
        self._owner = threading.get_ident()
        reader = self._reader
        assert reader is not None
        interfaces = [self.interface]
        parts: list[np.ndarray] = []
        raw: list[FrameBatch] = []  # the frames of parts, for the evidence ring
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
                    raw.append(frames)
                    count += len(frames)
                    if count >= self.batch_size:
                        yield self._chunk(parts, interfaces, read_at, raw)
                        parts, raw, count = [], [], 0
                        idle_since = time.monotonic()
                now = time.monotonic()
                if count and (now - first_at >= self.max_delay or eof):
                    yield self._chunk(parts, interfaces, read_at, raw)
                    parts, raw, count = [], [], 0
                    idle_since = now
                elif not count and now - idle_since >= self.max_delay and not eof:
                    yield _empty_chunk(interfaces, self.interface)
                    idle_since = now
            if not self._stopping:
                assert self.proc is not None
                if not _exited_cleanly(self.proc):
                    self._raise_exit()
        finally:
            self._owner = None
            self.stop()

    def _decode(self, frames: FrameBatch) -> np.ndarray:
        records = decode_frames(frames)
        self.packets += len(records)
        return records

    def _chunk(
        self, parts: list[np.ndarray], interfaces: list[str], read_at: float, raw: list[FrameBatch]
    ) -> Chunk:
        records = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return Chunk(
            records=records, interfaces=list(interfaces), read_at=read_at, source=self.interface, frames=raw
        )

    def stop(self) -> None:
        """Stop dumpcap (SIGTERM, then SIGKILL) and close its pipes.

        From another thread than the one iterating (the runner's interrupt) it only terminates
        dumpcap: the iterating thread sees the end of its output and cleans up.
        """
        self._stopping = True
        proc = self.proc
        if proc is None:
            return
        if self._owner is not None and self._owner != threading.get_ident():
            with contextlib.suppress(OSError):
                proc.terminate()
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

# ``tshark -T ek -e FIELD ...``: only these fields are written, and tshark builds only the part
# of the protocol tree they need (a third less CPU than ``-x -J "frame dns http tls"``).
TSHARK_FIELDS = (
    "frame.number",
    "frame.protocols",
    "dns.qry.name",
    "http.host",
    "http.request.method",
    "tls.handshake.extensions_server_name",
    "_ws.malformed",  # present when a dissector gave up (frame.protocols does not say so)
)
# The first occurrence of each field is all deep mode keeps (and a malformed packet can repeat
# _ws.malformed hundreds of times, which made tshark's output 8 times larger on test traffic).
TSHARK_ARGS = ("-E", "occurrence=f", *[arg for name in TSHARK_FIELDS for arg in ("-e", name)])
assert APP_FIELDS == ("app_protocol", "dns_query", "http_host", "http_method", "tls_sni")
_BORING = {"data", "_ws.malformed", "_ws.short", "_ws.expert", "_ws.unreassembled", "_ws.lua"}
MALFORMED = DECODE_ERROR_CODES["malformed packet (deep dissector)"]  # status of what tshark found malformed
_MIN_CHUNK = 2000  # a file is shared out between tshark processes in pieces of at least this
_FEED_LIMIT = 32 << 20  # bytes waiting for a live tshark's stdin before packets skip dissection
_PCAP_RECORD_HEADER = 16
_PCAP_FILE_HEADER = 24


def _first(value: Any) -> str:
    """The first value of an EK field (a list; -e gives one entry per occurrence in the packet)."""
    if type(value) is list:
        return value[0] if value else ""
    return "" if value is None else str(value)


_STACKS: dict[str, str] = {}  # frame.protocols -> app_protocol


def _app_protocol(protocols: str) -> str:
    """frame.protocols -> the highest layer worth naming: "eth:ethertype:ip:udp:dns" -> "DNS"."""
    known = _STACKS.get(protocols)
    if known is None:
        names = protocols.split(":")
        if len(_STACKS) >= 4096:  # there are few distinct stacks; keep the cache bounded anyway
            _STACKS.clear()
        known = _STACKS[protocols] = next((p.upper() for p in reversed(names) if p and p not in _BORING), "")
    return known


def _app_fields(layers: dict[str, Any]) -> tuple[dict[str, str], bool]:
    """The EK ``layers`` of one packet -> (its Chunk.app fields, whether tshark found it malformed)."""
    app_protocol = _app_protocol(_first(layers.get("frame_protocols")))
    if len(layers) <= 2:  # frame.number and frame.protocols only: the usual case
        return {
            "app_protocol": app_protocol,
            "dns_query": "",
            "http_host": "",
            "http_method": "",
            "tls_sni": "",
        }, False
    get = layers.get
    return {
        "app_protocol": app_protocol,
        "dns_query": _first(get("dns_qry_name")),
        "http_host": _first(get("http_host")),
        "http_method": _first(get("http_request_method")),
        "tls_sni": _first(get("tls_handshake_extensions_server_name")),
    }, "_ws_malformed" in layers


_PYSHARK: dict[str, Any] = {}
_TSHARK_VERSIONS: dict[str, Any] = {}


def _tshark_version(tshark_path: str | None) -> Any:
    """tshark's version, which pyshark checks before each capture (``packaging`` Version).

    pyshark asks ``tshark -v``, which takes as long as a tshark start (~0.3 s). The dumpcap
    installed beside tshark (same Wireshark package) answers in ~10 ms, so it is asked instead;
    once per process either way.
    """
    key = tshark_path or ""
    if key not in _TSHARK_VERSIONS:
        from packaging import version
        from pyshark.tshark.tshark import get_process_path, get_tshark_version

        tshark = get_process_path(tshark_path)
        dumpcap = Path(tshark).with_name("dumpcap")
        found = None
        if dumpcap.is_file():
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                out = subprocess.run([dumpcap, "-v"], capture_output=True, text=True, timeout=10, check=False)
                found = re.match(r"Dumpcap \(Wireshark\) (\d+\.\d+\.\d+)", out.stdout)
        _TSHARK_VERSIONS[key] = version.parse(found.group(1)) if found else get_tshark_version(tshark_path)
    return _TSHARK_VERSIONS[key]


def _pyshark_captures() -> tuple[Any, Any]:
    """pyshark's FileCapture and PipeCapture, set up for ``tshark -T ek -e FIELD ...``.

    pyshark builds its Packet objects from a ``frame`` layer, which EK output limited to fields
    does not have: its EK stream splitter hands each packet over as its JSON line instead, and
    the engine reads the fields from it. The tshark version (``tshark -v``, ~0.3 s) is asked
    once per process instead of once per capture, and the EK type mapping is not loaded.
    """
    if not _PYSHARK:
        import pyshark  # only the capture process needs it
        from pyshark.capture.capture import Capture
        from pyshark.capture.pipe_capture import PipeCapture
        from pyshark.tshark.output_parser.tshark_ek import TsharkEkJsonParser

        class EkLines(TsharkEkJsonParser):
            """Hands over every complete packet line at once, as a list (pyshark: one per call)."""

            async def get_packets_from_stream(
                self, stream: Any, existing_data: bytes, got_first_packet: bool = True
            ) -> tuple[list[bytes] | None, bytes]:
                end = existing_data.rfind(b"\n")
                if end >= 0:
                    lines = [
                        line
                        for line in existing_data[:end].split(b"\n")
                        if line.strip() and not line.startswith(b'{"index"')  # Elasticsearch's
                    ]
                    return lines or None, existing_data[end + 1 :]
                new_data = await stream.read(self.DEFAULT_BATCH_SIZE)
                if not new_data:
                    raise EOFError()
                return None, existing_data + new_data

        class Fields:
            tshark_path: str | None
            process: Any = None  # the asyncio Process of tshark, once started

            def _get_tshark_version(self) -> Any:
                return _tshark_version(self.tshark_path)

            def _setup_tshark_output_parser(self) -> Any:
                return EkLines()

            def close(self) -> None:
                # pyshark's __del__ closes a capture whose tshark failed; the engine's loop is gone
                if self.eventloop.is_closed():
                    self._running_processes.clear()
                    return
                super().close()

        class FileFields(Fields, pyshark.FileCapture):
            async def _get_tshark_process(self, packet_count: int | None = None, stdin: Any = None) -> Any:
                # pyshark's, without -l: on a file, flushing tshark's output after every packet
                # only costs (a wake-up and a read of the pipe per packet instead of per 4 KB)
                params = [self._get_tshark_path(), "-n", "-T", "ek", *self.get_parameters(packet_count)]
                process = await asyncio.create_subprocess_exec(
                    *params, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=stdin
                )
                self._create_stderr_handling_task(process.stderr)
                self._created_new_process(params, process)
                self.process = process
                return process

        class PipeFields(Fields, PipeCapture):
            """``tshark -r -`` reading pcap that the engine writes to a pipe (stdin)."""

            def __init__(self, pipe: int, **kw: Any) -> None:
                use_ek = kw.pop("use_ek", True)
                super().__init__(pipe, **kw)
                self._use_ek = use_ek  # PipeCapture does not take the argument

            async def _get_tshark_process(self, packet_count: int | None = None) -> Any:
                try:
                    self.process = await super()._get_tshark_process(packet_count=packet_count)
                    return self.process
                finally:
                    self.release_pipe()  # tshark holds its own copy of the read end

            def release_pipe(self) -> None:
                if self._pipe is not None:
                    os.close(self._pipe)
                    self._pipe = None

            def close(self) -> None:
                self.release_pipe()
                if self.eventloop.is_closed():  # as Fields.close
                    self._running_processes.clear()
                    return
                Capture.close(self)  # not PipeCapture.close: the pipe is closed already

        _PYSHARK.update(file=FileFields, pipe=PipeFields)
    return _PYSHARK["file"], _PYSHARK["pipe"]


class _Feeder:
    """Non-blocking writes to a pipe from the event loop; what the pipe cannot take yet waits here."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        os.set_blocking(fd, False)
        self.loop = loop
        self.fd = fd
        self.buf = bytearray()
        self.closing = False
        self.broken = False

    @property
    def pending(self) -> int:
        return len(self.buf)

    def write(self, data: bytes | memoryview) -> None:
        if self.fd < 0 or self.closing:
            return
        if not self.buf:
            try:
                done = os.write(self.fd, data)
            except BlockingIOError:
                done = 0
            except OSError:  # tshark is gone (BrokenPipeError)
                self.abort()
                return
            if done == len(data):
                return
            data = memoryview(data)[done:]
            self.loop.add_writer(self.fd, self._drain)
        self.buf += data

    def _drain(self) -> None:
        try:
            done = os.write(self.fd, self.buf)
        except BlockingIOError:
            return
        except OSError:
            self.abort()
            return
        del self.buf[:done]
        if not self.buf:
            self.loop.remove_writer(self.fd)
            if self.closing:
                self._close_fd()

    def close(self) -> None:
        """End of tshark's input, once what was written so far has gone through."""
        self.closing = True
        if not self.buf:
            self._close_fd()

    def abort(self) -> None:
        self.broken = self.closing = True
        self.buf = bytearray()
        self._close_fd()

    def _close_fd(self) -> None:
        if self.fd >= 0:
            if not self.loop.is_closed():
                self.loop.remove_writer(self.fd)
            os.close(self.fd)
            self.fd = -1


class _Tshark:
    """One tshark process run by pyshark, and the EK fields of the packets it has dissected."""

    def __init__(
        self, capture: Any, loop: asyncio.AbstractEventLoop, path: str | None, feeder: _Feeder | None
    ):
        self.capture = capture
        self.path = path
        self.feeder = feeder
        self.lines: list[bytes] = []  # EK lines not taken yet; lines[0] is frame number ``base``
        self.base = 1
        self.answered = 0  # packets dissected (tshark answers for every frame, in order)
        self.sent = 0  # frames written to its stdin (live)
        self.task = loop.create_task(self._run())

    async def _run(self) -> None:
        capture = self.capture
        try:
            await capture.packets_from_tshark(self._add, close_tshark=False)
            # tshark closed its output and is exiting: let it, rather than have pyshark kill it
            # (a killed tshark that is slow to go is later reaped twice, and asyncio complains)
            for proc in list(getattr(capture, "_running_processes", ())):
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(proc.wait(), 10)
        finally:
            await capture.close_async()

    def _add(self, lines: list[bytes]) -> None:
        self.lines += lines
        self.answered += len(lines)

    @property
    def finished(self) -> bool:
        return self.task.done()

    def take(self, first: int, n: int) -> list[dict[str, Any] | None]:
        """The EK layers of frames ``first`` .. ``first + n - 1`` (None: not dissected); older rows go."""
        out: list[dict[str, Any] | None] = [None] * n
        upto = max(0, first + n - self.base)
        lines = self.lines[:upto]
        if not lines:
            return out
        del self.lines[:upto]
        self.base += len(lines)
        for row in json.loads(b"[" + b",".join(lines) + b"]"):  # one parse per batch
            layers = row.get("layers") or {}
            number = int(_first(layers.get("frame_number")) or 0) - first
            if 0 <= number < n:
                out[number] = layers
        return out

    def failure(self) -> str:
        """Why tshark stopped, if it failed ("" otherwise)."""
        if not self.task.done() or self.task.cancelled() or self.task.exception() is None:
            return ""
        return getattr(self.capture, "_last_error_line", "") or str(self.task.exception())


class _Segment:
    """Live packets read from dumpcap in one go: records, and where tshark answers for them."""

    __slots__ = ("arrived", "first", "frames", "read_at", "records", "run")

    def __init__(
        self,
        records: np.ndarray,
        run: _Tshark | None,
        first: int,
        arrived: float,
        read_at: float,
        frames: FrameBatch | None = None,
    ):
        self.records = records
        self.run = run  # None: not sent to tshark
        self.first = first  # frame number of records[0] in run's input
        self.arrived = arrived
        self.read_at = read_at
        self.frames = frames  # the records' raw frames (for the evidence ring)

    def complete(self) -> bool:
        run = self.run
        return run is None or run.answered >= self.first + len(self.records) - 1 or run.finished

    def split(self, k: int) -> _Segment:
        """Keep the first ``k`` records here; return the rest."""
        frames = self.frames
        rest = _Segment(
            self.records[k:], self.run, self.first + k, self.arrived, self.read_at,
            frames.slice(k, len(frames)) if frames is not None else None,
        )  # fmt: skip
        self.records = self.records[:k]
        self.frames = frames.slice(0, k) if frames is not None else None
        return rest


class PysharkEngine:
    """Deep mode: our decoder's records plus application fields from tshark through pyshark (EK)."""

    def __init__(
        self,
        source: str | os.PathLike[str],
        bpf: str = "",
        *,
        batch_size: int = 1000,
        max_delay: float = 0.5,
        recycle_every: int = 20_000,
        processes: int | None = None,
        snaplen: int = 262144,
        max_backlog: int = 20_000,
        tshark_path: str | None = None,
        dumpcap: str = "dumpcap",
    ) -> None:
        self.source = os.fspath(source)
        self.is_file = os.path.isfile(self.source)
        self.bpf = bpf
        self.batch_size = batch_size
        self.max_delay = max_delay
        self.recycle_every = recycle_every
        self.processes = max(1, processes or min(2, os.cpu_count() or 1))
        self.snaplen = snaplen
        self.max_backlog = max_backlog
        self.tshark_path = tshark_path
        self.dumpcap = dumpcap
        self.stats = ReadStats(source=self.source)
        self.packets = 0
        self.recycles = 0  # tshark processes finished (one per file piece; live: restarts)
        self.tshark_started = 0
        self.app_skipped = 0  # live: packets not sent to tshark because it fell behind
        self.app_missing = 0  # packets sent to tshark that it gave no fields for
        self.interfaces: list[str] = [] if self.is_file else [self.source]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runs: list[_Tshark] = []
        self._current: _Tshark | None = None  # live: the tshark packets are written to
        self._spare: _Tshark | None = None  # live: the next one, started before it is needed
        self._dumpcap: DumpcapEngine | None = None
        self._header = b""
        self._segments: deque[_Segment] = deque()
        self._raw: list[bytes] = []  # live: dumpcap's bytes not yet decoded
        self._eof = False
        self._error: BaseException | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._stopped = False
        self._owner: int | None = None  # thread running chunks()
        self._skip_logged = 0.0

    # -- set-up ------------------------------------------------------------------------------

    def _check_loop(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        raise RuntimeError(
            "PysharkEngine cannot run inside a running asyncio event loop; run it in the capture process"
        )

    def _params(self) -> list[str]:
        return list(TSHARK_ARGS)

    def start(self) -> None:
        """Live: start dumpcap now (CaptureUnavailable if it cannot capture). Files: check tshark."""
        if shutil.which(self.tshark_path or "tshark") is None:
            raise CaptureUnavailable(TSHARK_MISSING)
        _pyshark_captures()
        _tshark_version(self.tshark_path)
        if self.is_file or self._dumpcap is not None:
            return
        self._stopped = False
        dumpcap = DumpcapEngine(self.source, self.bpf, self.snaplen, dumpcap=self.dumpcap)
        header = bytearray()

        def keep_header(data: bytes) -> None:
            if len(header) < _PCAP_FILE_HEADER:
                header.extend(data[: _PCAP_FILE_HEADER - len(header)])

        dumpcap.on_data = keep_header
        dumpcap.start()
        dumpcap.on_data = None
        self._dumpcap = dumpcap
        self._header = bytes(header)
        if dumpcap.stats.format != "pcap":  # -P asks for it; tshark gets the same bytes
            dumpcap.stop()
            self._dumpcap = None
            raise CaptureUnavailable(f"dumpcap wrote {dumpcap.stats.format or 'nothing'}, not pcap")

    def _spawn(self, path: str | None) -> _Tshark:
        """Start one tshark through pyshark: on a file, or reading pcap from a pipe we write."""
        assert self._loop is not None
        file_capture, pipe_capture = _pyshark_captures()
        common: dict[str, Any] = {
            "use_ek": True,
            "eventloop": self._loop,
            "custom_parameters": self._params(),
            "tshark_path": self.tshark_path,
        }
        if path is not None:
            run = _Tshark(file_capture(path, keep_packets=False, **common), self._loop, path, None)
        else:
            read_fd, write_fd = os.pipe()
            try:
                capture = pipe_capture(read_fd, **common)
            except BaseException:
                os.close(read_fd)
                os.close(write_fd)
                raise
            feeder = _Feeder(self._loop, write_fd)
            run = _Tshark(capture, self._loop, None, feeder)
            feeder.write(self._header)
        self._runs.append(run)
        self.tshark_started += 1
        return run

    def _close_run(self, run: _Tshark, *, wait: bool = True) -> None:
        loop = self._loop
        if run.feeder is not None:
            run.feeder.abort()
        if loop is not None and not loop.is_closed():
            if not run.task.done():
                run.task.cancel()
            if wait:
                with contextlib.suppress(BaseException):
                    loop.run_until_complete(run.task)
                with contextlib.suppress(Exception):
                    loop.run_until_complete(run.capture.close_async())
                process = run.capture.process
                if process is not None and process.returncode is None:
                    # pyshark waits 1 s for the tshark it killed; wait until asyncio has reaped it,
                    # or it is reaped twice later and asyncio logs "Unknown child process"
                    with contextlib.suppress(Exception):
                        loop.run_until_complete(asyncio.wait_for(process.wait(), 10))
        release = getattr(run.capture, "release_pipe", None)
        if release is not None:
            release()
        if run in self._runs:
            self._runs.remove(run)

    # -- iteration ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Chunk]:
        return self.chunks()

    def chunks(self) -> Iterator[Chunk]:
        """Chunks of records with their application fields; empty chunks while a live link is idle."""
        self._check_loop()
        self._stopped = False
        self.start()
        self._owner = threading.get_ident()
        self._loop = asyncio.new_event_loop()
        try:
            yield from (self._file_chunks() if self.is_file else self._live_chunks())
        finally:
            self._owner = None
            self.stop()

    def _wait(self, seconds: float, task: asyncio.Task[Any] | None = None) -> None:
        """Let pyshark, the pipes and dumpcap progress for ``seconds`` (less if ``task`` ends)."""
        assert self._loop is not None
        if task is None:
            self._loop.run_until_complete(asyncio.sleep(seconds))
        elif not task.done():
            self._loop.run_until_complete(asyncio.wait([task], timeout=seconds))

    def _apply(
        self,
        records: np.ndarray,
        layers: list[dict[str, Any] | None],
        app: dict[int, dict[str, str]],
        offset: int = 0,
    ) -> None:
        """Add the application fields of ``records`` to ``app`` (by index in the chunk, ``records[0]``
        being at ``offset``); flag what tshark found malformed."""
        status = records["status"]
        for i, fields in enumerate(layers):
            if fields is None:
                self.app_missing += 1
                continue
            values, malformed = _app_fields(fields)
            if malformed and status[i] == 0:
                status[i] = MALFORMED
            app[offset + i] = values

    # -- files -------------------------------------------------------------------------------

    def _count_frames(self) -> int:
        try:
            return sum(len(b) for b in iter_frame_batches(self.source, 1 << 16, stats=ReadStats()))
        except CaptureFileError as exc:
            raise CaptureUnavailable(str(exc)) from None

    def _split(self) -> list[str]:
        """The file, or the pieces editcap cuts it into: one tshark each, ``processes`` at a time."""
        total = self._count_frames()
        every = self.recycle_every or total
        if self.processes > 1:  # share a small file out, so that every process has work
            every = min(every, max(_MIN_CHUNK, -(-total // self.processes)))
        if total <= every:
            return [self.source]
        editcap = shutil.which("editcap")
        if editcap is None:
            log.warning("editcap not found: deep mode reads %s with one tshark, no recycling", self.source)
            return [self.source]
        self._tmpdir = tempfile.TemporaryDirectory(prefix="netmon-deep-")
        fmt = self._format()  # editcap writes pcapng unless told; our reader is faster on pcap
        out = Path(self._tmpdir.name) / ("chunk." + fmt)
        result = subprocess.run(
            [editcap, "-F", fmt, "-c", str(every), self.source, str(out)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise CaptureUnavailable(f"cannot split {self.source}: {_explain(result.stderr, self.source)}")

        def index(p: Path) -> int:
            match = re.match(r"chunk_(\d+)", p.name)
            return int(match.group(1)) if match else 0

        return [str(p) for p in sorted(Path(self._tmpdir.name).iterdir(), key=index)]

    def _format(self) -> str:
        """editcap's name for the file's format: pcap (microseconds), nsecpcap or pcapng."""
        import gzip

        with open(self.source, "rb") as f:
            head = f.read(4)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(self.source, "rb") as g:
                head = g.read(4)
        if head in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4"):
            return "pcap"
        if head in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"):
            return "nsecpcap"
        return "pcapng"

    def _file_chunks(self) -> Iterator[Chunk]:
        todo = deque(self._split())
        running: deque[_Tshark] = deque()
        while todo or running:
            while todo and len(running) < self.processes:
                running.append(self._spawn(todo.popleft()))
            run = running[0]
            yield from self._file_piece(run)
            if self._stopped:
                return
            running.popleft()
            self._wait(10, run.task)  # it has written every packet: let it exit on its own
            self._close_run(run)
            self.recycles += 1

    def _file_piece(self, run: _Tshark) -> Iterator[Chunk]:
        """The records of one piece of the file (our reader), with tshark's fields for them."""
        assert run.path is not None
        done = 0
        for frames in iter_frame_batches(run.path, self.batch_size, stats=self.stats):
            n = len(frames)
            while run.answered < done + n and not run.finished and not self._stopped:
                self._wait(0.005, run.task)
            if self._stopped:
                return
            failure = run.failure()
            if failure and not run.answered:
                raise CaptureUnavailable(_explain(failure, self.source))
            read_at = time.time()
            records = decode_frames(frames)
            app: dict[int, dict[str, str]] = {}
            self._apply(records, run.take(done + 1, n), app)
            done += n
            self.packets += n
            self.interfaces = list(frames.interfaces)
            yield Chunk(
                records=records,
                interfaces=list(frames.interfaces) or [""],
                app=app,
                read_at=read_at,
                source=self.source,
                frames=[frames],
            )
        if run.failure():
            log.warning("tshark stopped early on %s: %s", self.source, run.failure())

    # -- live --------------------------------------------------------------------------------

    def _live_chunks(self) -> Iterator[Chunk]:
        loop = self._loop
        dumpcap = self._dumpcap
        assert loop is not None and dumpcap is not None and dumpcap.proc is not None
        proc = dumpcap.proc
        assert proc.stdout is not None and proc.stderr is not None
        self._segments = deque()
        self._raw = []
        self._eof = False
        self._error = None
        loop.add_reader(proc.stdout.fileno(), self._on_dumpcap_out)
        if not proc.stderr.closed:
            loop.add_reader(proc.stderr.fileno(), self._on_dumpcap_err)
        self._current = self._spawn(None)
        self._take_frames()  # what came with dumpcap's header
        tick = max(0.001, min(0.02, self.max_delay / 4))
        idle_since = time.monotonic()
        segments = self._segments
        while not self._stopped:
            self._take_frames()
            if self._error is not None:
                raise self._error
            self._check_tshark()
            ready = 0
            for seg in segments:
                if not seg.complete():
                    break
                ready += len(seg.records)
                if ready >= self.batch_size:
                    break
            now = time.monotonic()
            if ready >= self.batch_size or (
                ready and (now - segments[0].arrived >= self.max_delay or self._eof)
            ):
                yield self._live_chunk(min(ready, self.batch_size))
                idle_since = time.monotonic()
            elif not segments and self._eof:
                break
            elif not segments and now - idle_since >= self.max_delay:
                yield _empty_chunk(self.interfaces, self.source)
                idle_since = time.monotonic()
            else:
                self._wait(tick)
        if self._eof and not self._stopped and not _exited_cleanly(proc):
            self._remove_readers()
            dumpcap._raise_exit()

    def _live_chunk(self, count: int) -> Chunk:
        segments = self._segments
        parts: list[np.ndarray] = []
        raw: list[FrameBatch] = []
        app: dict[int, dict[str, str]] = {}
        read_at = segments[0].read_at
        offset = 0
        while count > 0:
            seg = segments[0]
            if len(seg.records) > count:
                segments[0] = seg.split(count)
            else:
                segments.popleft()
            if seg.run is not None:
                self._apply(seg.records, seg.run.take(seg.first, len(seg.records)), app, offset)
            parts.append(seg.records)
            if seg.frames is not None:
                raw.append(seg.frames)
            offset += len(seg.records)
            count -= len(seg.records)
        records = parts[0] if len(parts) == 1 else np.concatenate(parts)
        self.packets += len(records)
        return Chunk(
            records=records,
            interfaces=list(self.interfaces),
            app=app,
            read_at=read_at,
            source=self.source,
            frames=raw if len(raw) == len(parts) else [],  # all or nothing: they must line up
        )

    def _on_dumpcap_out(self) -> None:
        """dumpcap wrote: keep the bytes (decoded once per tick, not once per read)."""
        dumpcap = self._dumpcap
        assert dumpcap is not None and dumpcap.proc is not None and dumpcap.proc.stdout is not None
        data = os.read(dumpcap.proc.stdout.fileno(), 1 << 20)
        if data:
            self._raw.append(data)
            return
        self._remove_readers()
        self._eof = True
        self._take_frames()
        assert dumpcap._reader is not None
        with contextlib.suppress(CaptureFileError):
            dumpcap._reader.close()
        self._take_frames()
        for run in (self._current, self._spare):
            if run is not None and run.feeder is not None:
                run.feeder.close()  # tshark finishes what it has, then exits

    def _on_dumpcap_err(self) -> None:
        dumpcap = self._dumpcap
        assert dumpcap is not None and dumpcap.proc is not None and dumpcap.proc.stderr is not None
        if not dumpcap._read_err():
            assert self._loop is not None
            self._loop.remove_reader(dumpcap.proc.stderr.fileno())
            dumpcap.proc.stderr.close()

    def _remove_readers(self) -> None:
        dumpcap, loop = self._dumpcap, self._loop
        if dumpcap is None or dumpcap.proc is None or loop is None or loop.is_closed():
            return
        for pipe in (dumpcap.proc.stdout, dumpcap.proc.stderr):
            if pipe is not None and not pipe.closed:
                loop.remove_reader(pipe.fileno())

    def _take_frames(self) -> None:
        """Decode what dumpcap delivered and pass the same packets to tshark."""
        assert self._dumpcap is not None and self._dumpcap._reader is not None
        reader = self._dumpcap._reader
        if self._raw:
            data = self._raw[0] if len(self._raw) == 1 else b"".join(self._raw)
            self._raw.clear()
            try:
                reader.feed(data)
            except CaptureFileError as exc:
                self._error = CaptureUnavailable(f"dumpcap output unreadable: {exc}")
                return
        while (frames := reader.take(1 << 16)) is not None:
            records = decode_frames(frames)
            arrived, read_at = time.monotonic(), time.time()
            for start, count, run, first in self._feed(frames):
                self._segments.append(
                    _Segment(
                        records[start : start + count], run, first, arrived, read_at,
                        frames.slice(start, start + count),
                    )
                )  # fmt: skip

    def _feed(self, frames: FrameBatch) -> list[tuple[int, int, _Tshark | None, int]]:
        """Write the frames' pcap records to tshark, switching to the next one every ``recycle_every``.

        Returns the parts as (start, count, tshark or None when not sent, its frame number).
        """
        parts: list[tuple[int, int, _Tshark | None, int]] = []
        n = len(frames)
        i = 0
        while i < n:
            run = self._current
            due = self.recycle_every and run is not None and run.sent >= self.recycle_every
            if run is None or due or run.finished or run.feeder.closing:
                if run is not None:
                    run.feeder.close()  # it finishes what it has, then exits
                    self.recycles += 1
                run, self._spare = self._spare or self._spawn(None), None
                self._current = run
            count = n - i
            if self.recycle_every:
                count = min(count, self.recycle_every - run.sent)
                if self._spare is None and run.sent + count >= self.recycle_every * 0.95:
                    self._spare = self._spawn(None)  # started ahead: no wait for tshark at the switch
            backlog = sum(r.sent - r.answered for r in self._runs if not r.finished)
            if backlog + count > self.max_backlog or run.feeder.pending > _FEED_LIMIT:
                self._skipped(backlog, count)
                parts.append((i, count, None, 0))
            else:
                start = int(frames.offsets[i]) - _PCAP_RECORD_HEADER
                last = i + count - 1
                end = int(frames.offsets[last]) + int(frames.caplen[last])
                run.feeder.write(memoryview(frames.buf)[start:end])
                parts.append((i, count, run, run.sent + 1))
                run.sent += count
            i += count
        return parts

    def _skipped(self, backlog: int, count: int) -> None:
        self.app_skipped += count
        now = time.monotonic()
        if now - self._skip_logged > 10:
            self._skip_logged = now
            log.warning(
                "deep mode: tshark is %d packets behind; %d packets published without dissection so far",
                backlog,
                self.app_skipped,
            )

    def _check_tshark(self) -> None:
        """Forget tshark processes that have ended; fail when the current one could not run at all."""
        for run in list(self._runs):
            if not run.finished:
                continue
            failure = run.failure()
            if failure and run in (self._current, self._spare) and not run.answered:
                raise CaptureUnavailable(f"tshark: {_explain(failure, self.source)}")
            if failure:
                log.warning("tshark stopped (%s); restarting it", failure)
            self._close_run(run, wait=False)
            if run is self._spare:
                self._spare = None

    # -- stop --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop tshark and dumpcap, close the event loop, remove temporary files.

        From another thread (the runner's interrupt) it only asks: the thread iterating the
        engine stops within a few milliseconds and cleans up.
        """
        self._stopped = True
        if self._owner is not None and self._owner != threading.get_ident():
            return
        loop = self._loop
        self._remove_readers()
        if self._dumpcap is not None:
            self._dumpcap.stop()
            self._dumpcap = None
        for run in list(self._runs):
            self._close_run(run)
        self._current = self._spare = None
        self._segments = deque()
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
        self._loop = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> PysharkEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

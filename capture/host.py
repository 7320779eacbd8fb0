"""What this host offers for capture: its interfaces, and whether a BPF filter compiles.

Filters are compiled with libpcap itself (``pcap_open_dead`` + ``pcap_compile`` through ctypes),
which needs no capture privileges and gives the same error text dumpcap would.

The interface list comes from ``dumpcap -D`` (a process start, tens of milliseconds), which
``GET /api/interfaces`` and every interface check (configuration, WebSocket, capture start) ask
for: the answer, a missing or failing dumpcap included, is kept ``INTERFACE_CACHE_SECONDS`` per
process, so a client polling the API cannot make the server fork a dumpcap per request.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import shutil
import socket
import subprocess
import threading
import time
from functools import cache

DEMO_INTERFACE = "demo"
_DLT_EN10MB = 1
_PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
INTERFACE_CACHE_SECONDS = 10.0


class ToolMissing(RuntimeError):
    """A capture tool (dumpcap/tshark or libpcap) is not installed."""


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


@cache
def _libpcap() -> ctypes.CDLL:
    name = ctypes.util.find_library("pcap")
    candidates = [name] if name else []
    candidates += ["libpcap.so.1", "libpcap.so.0.8", "libpcap.so"]
    for candidate in candidates:
        try:
            lib = ctypes.CDLL(candidate)
        except OSError:
            continue
        lib.pcap_open_dead.restype = ctypes.c_void_p
        lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.pcap_compile.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(_BpfProgram),
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_uint32,
        ]
        lib.pcap_geterr.restype = ctypes.c_char_p
        lib.pcap_geterr.argtypes = [ctypes.c_void_p]
        lib.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
        lib.pcap_close.argtypes = [ctypes.c_void_p]
        return lib
    raise ToolMissing("libpcap not found: install tshark (apt-get install tshark), which brings it")


def compile_bpf(expression: str) -> None:
    """Raise ValueError with libpcap's message when ``expression`` is not a valid capture filter."""
    if not expression.strip():
        return
    if "\x00" in expression:
        raise ValueError("filter contains a NUL byte")
    lib = _libpcap()
    handle = lib.pcap_open_dead(_DLT_EN10MB, 65535)
    program = _BpfProgram()
    try:
        if (
            lib.pcap_compile(handle, ctypes.byref(program), expression.encode(), 1, _PCAP_NETMASK_UNKNOWN)
            != 0
        ):
            message = (lib.pcap_geterr(handle) or b"syntax error").decode(errors="replace")
            raise ValueError(message)
        lib.pcap_freecode(ctypes.byref(program))
    finally:
        lib.pcap_close(handle)


def host_interface_names() -> list[str]:
    """Names of the capture interfaces: dumpcap's (cached, see ``list_interfaces``), then the ones the
    kernel knows that dumpcap did not list (all of them without dumpcap), then libpcap's 'any'."""
    try:
        names = [item["name"] for item in list_interfaces()]
    except ToolMissing:
        names = []
    for name in [name for _, name in socket.if_nameindex()] + ["any"]:
        if name not in names:
            names.append(name)
    return names


def is_valid_interface(name: str) -> bool:
    return name == DEMO_INTERFACE or name in host_interface_names()


_DUMPCAP_LINE = re.compile(r"^\s*\d+\.\s+(\S+)(?:\s+\((.*)\))?\s*$")
_clock = time.monotonic
_interfaces_lock = threading.Lock()
# dumpcap's path (None: not installed) -> (when asked, its interfaces or why there are none). Keyed by
# the path so that installing tshark (or a test's PATH) is seen at once; only the last key is kept.
_interfaces: dict[str | None, tuple[float, list[dict[str, str]] | str]] = {}


def list_interfaces(timeout: float = 10.0) -> list[dict[str, str]]:
    """The capture interfaces dumpcap can see, as ``{"name", "description"}`` (raises ToolMissing).

    One ``dumpcap -D`` per ``INTERFACE_CACHE_SECONDS`` per process: callers in between get the
    same answer (a copy of the list, or the same ToolMissing message).
    """
    dumpcap = shutil.which("dumpcap")
    with _interfaces_lock:  # held while dumpcap runs: concurrent callers wait for one run
        cached = _interfaces.get(dumpcap)
        if cached is None or _clock() - cached[0] >= INTERFACE_CACHE_SECONDS:
            try:
                answer: list[dict[str, str]] | str = _run_dumpcap(dumpcap, timeout)
            except ToolMissing as exc:
                answer = str(exc)
            _interfaces.clear()
            _interfaces[dumpcap] = cached = (_clock(), answer)
    answer = cached[1]
    if isinstance(answer, str):
        raise ToolMissing(answer)
    return [dict(item) for item in answer]


def _run_dumpcap(dumpcap: str | None, timeout: float) -> list[dict[str, str]]:
    if dumpcap is None:
        raise ToolMissing("dumpcap not found: install tshark (apt-get install tshark)")
    try:
        result = subprocess.run([dumpcap, "-D"], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ToolMissing(f"dumpcap -D did not answer within {timeout:g}s") from None
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise ToolMissing(f"dumpcap -D failed: {message[-1] if message else 'no output'}")
    interfaces = []
    for line in result.stdout.splitlines():
        match = _DUMPCAP_LINE.match(line)
        if match:
            interfaces.append({"name": match.group(1), "description": match.group(2) or ""})
    return interfaces

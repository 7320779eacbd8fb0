"""Live capture engines on the loopback interface: dumpcap + our decoder, and pyshark (deep mode).

These need dumpcap/tshark and the right to capture (root, or the wireshark group / capabilities);
without them they skip with the reason, as the product itself falls back to demo mode.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time

import pytest

from capture import engines, sources
from capture.records import ip_to_text


def _can_capture_on_lo() -> str | None:
    if shutil.which("dumpcap") is None:
        return "dumpcap (tshark) is not installed"
    probe = subprocess.run(
        ["dumpcap", "-i", "lo", "-c", "1", "-a", "duration:1", "-w", "/dev/null", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"cannot capture on lo here: {probe.stderr.strip()[:120]}"
    return None


SKIP = _can_capture_on_lo()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send_udp(port: int, n: int, delay: float = 0.3) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)  # let the capture get going
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(n):
                s.sendto(b"x" * (i % 50), ("127.0.0.1", port))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def collect(engine, want: int, timeout: float = 15.0) -> list:
    batches, got, deadline = [], 0, time.monotonic() + timeout
    for batch in engine:
        batches.append(batch)
        got += len(batch.records)
        if got >= want or time.monotonic() > deadline:
            break
    engine.stop()
    return batches


def test_dumpcap_engine_decodes_exactly_the_filtered_packets():
    port = free_udp_port()
    engine = engines.DumpcapEngine("lo", f"udp dst port {port}", batch_size=64, max_delay=0.2)
    engine.start()
    send_udp(port, 200)

    batches = collect(engine, 200)

    records = [r for b in batches for r in b.records]
    assert len(records) == 200
    assert {int(r["dport"]) for r in records} == {port}
    assert {int(r["proto"]) for r in records} == {17}
    assert {ip_to_text(r["dst_ip"], int(r["ip_version"])) for r in records} == {"127.0.0.1"}
    assert [int(r["seq"]) for r in records] == list(range(200))
    assert all(len(b.records) <= 64 for b in batches)


def test_dumpcap_engine_yields_empty_batches_while_idle_so_the_caller_can_stop():
    engine = engines.DumpcapEngine("lo", f"udp dst port {free_udp_port()}", max_delay=0.2)
    engine.start()
    started = time.monotonic()

    first = next(iter(engine))

    assert len(first.records) == 0
    assert time.monotonic() - started < 2
    engine.stop()


@pytest.mark.parametrize(
    ("interface", "bpf", "words"),
    [
        ("lo", "udp prt 53", "invalid capture filter"),
        ("netmon-nope0", "", "netmon-nope0"),
    ],
)
def test_engine_start_failures_are_one_line_reasons(interface, bpf, words):
    with pytest.raises(engines.CaptureUnavailable) as info:
        engines.DumpcapEngine(interface, bpf).start()

    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_open_live_refuses_an_unknown_interface_before_starting_anything():
    with pytest.raises(sources.CaptureUnavailable, match="not found on this host"):
        sources.open_live("netmon-nope0", "", "basic")


def test_live_chunks_carry_records_and_the_interface():
    port = free_udp_port()
    engine = sources.open_live("lo", f"udp dst port {port}", "basic")
    send_udp(port, 30)
    got = 0
    deadline = time.monotonic() + 15
    for chunk in sources.live_chunks(engine, "lo"):
        got += len(chunk.records)
        assert chunk.interfaces == ["lo"]
        if got >= 30 or time.monotonic() > deadline:
            break
    engine.stop()
    assert got == 30


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_deep_engine_adds_application_fields_on_a_live_interface():
    port = free_udp_port()
    engine = engines.PysharkEngine("lo", f"udp dst port {port}", batch_size=10, max_delay=0.3)
    # A DNS query for example.org, sent to a port tshark decodes as DNS because of the payload.
    query = bytes.fromhex("123401000001000000000000076578616d706c65036f72670000010001")

    def send() -> None:
        time.sleep(3)  # tshark takes a moment to start
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(5):
                s.sendto(query, ("127.0.0.1", port))
                time.sleep(0.05)

    threading.Thread(target=send, daemon=True).start()
    batches = collect(engine, 5, timeout=30)

    records = [r for b in batches for r in b.records]
    assert len(records) == 5
    apps = {seq: app for b in batches for seq, app in b.app.items()}
    assert set(apps) == {int(r["seq"]) for r in records}
    assert all(app["app_protocol"] for app in apps.values())


def test_deep_engine_refuses_to_run_inside_an_event_loop():
    import asyncio

    async def inside() -> None:
        next(iter(engines.PysharkEngine("lo", "")))

    with pytest.raises(RuntimeError, match="event loop"):
        asyncio.run(inside())

"""Capture engines: dumpcap + our decoder, and pyshark (deep mode), live on loopback and on files.

The live tests need dumpcap/tshark and the right to capture (root, or the wireshark group /
capabilities); without them they skip with the reason, as the product itself falls back to demo
mode. The deep-mode file tests need tshark and editcap only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scapy.all import DNS, DNSQR, IP, TCP, UDP, Ether, Raw
from scapy.layers.tls.all import TLS, TLSClientHello
from scapy.layers.tls.extensions import ServerName, TLS_Ext_ServerName

from capture import engines, sources
from capture.pcapio import ReadStats
from capture.pcapwriter import synthetic_records, write_pcap
from capture.records import RECORD_DTYPE, ip_to_text
from tests.capture import pcaps


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
live = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
tshark = pytest.mark.skipif(
    shutil.which("tshark") is None or shutil.which("editcap") is None, reason="tshark is not installed"
)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send_udp(
    port: int, n: int, delay: float = 0.3, payload: bytes | None = None, gap: float = 0.0
) -> threading.Thread:
    """``n`` datagrams to ``port`` on loopback after ``delay`` seconds, ``gap`` seconds apart
    (``payload``, or 0-49 bytes of "x")."""

    def run() -> None:
        time.sleep(delay)  # let the capture get going
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(n):
                s.sendto(b"x" * (i % 50) if payload is None else payload, ("127.0.0.1", port))
                if gap:
                    time.sleep(gap)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def collect(engine, want: int, timeout: float = 15.0) -> list:
    chunks, got, deadline = [], 0, time.monotonic() + timeout
    for chunk in engine:
        chunks.append(chunk)
        got += len(chunk.records)
        if got >= want or time.monotonic() > deadline:
            break
    engine.stop()
    return chunks


def numbered(chunks: list) -> tuple[np.ndarray, dict[int, dict[str, str]]]:
    """The chunks' records numbered from 0 and their application fields by seq, as the runner
    numbers a new sensor's packets (engines do not number them and key ``app`` by index in the chunk)."""
    records = np.concatenate([c.records for c in chunks]) if chunks else np.zeros(0, RECORD_DTYPE)
    records["seq"] = np.arange(len(records))
    apps, first = {}, 0
    for c in chunks:
        assert all(0 <= i < len(c.records) for i in c.app)
        apps.update({first + i: app for i, app in c.app.items()})
        first += len(c.records)
    return records, apps


@live
def test_dumpcap_engine_decodes_exactly_the_filtered_packets():
    port = free_udp_port()
    engine = engines.DumpcapEngine("lo", f"udp dst port {port}", batch_size=64, max_delay=0.2)
    engine.start()
    send_udp(port, 200)

    chunks = collect(engine, 200)

    records, _ = numbered(chunks)  # (the engine does not number them)
    assert len(records) == 200
    assert {int(r["dport"]) for r in records} == {port}
    assert {int(r["proto"]) for r in records} == {17}
    assert {ip_to_text(r["dst_ip"], int(r["ip_version"])) for r in records} == {"127.0.0.1"}
    assert records["payload_len"].tolist() == [i % 50 for i in range(200)]  # all, in the order sent
    assert all(len(c.records) <= 64 for c in chunks)
    assert {c.source for c in chunks} == {"lo"}


@live
def test_dumpcap_engine_yields_empty_batches_while_idle_so_the_caller_can_stop():
    engine = engines.DumpcapEngine("lo", f"udp dst port {free_udp_port()}", max_delay=0.2)
    engine.start()
    started = time.monotonic()

    first = next(iter(engine))

    assert len(first.records) == 0
    assert time.monotonic() - started < 2
    engine.stop()


@live
@pytest.mark.parametrize("engine", [engines.DumpcapEngine, engines.PysharkEngine])
@pytest.mark.parametrize(
    ("interface", "bpf", "words"),
    [
        ("lo", "udp prt 53", "invalid capture filter"),
        ("netmon-nope0", "", "netmon-nope0"),
    ],
)
def test_engine_start_failures_are_one_line_reasons(engine, interface, bpf, words):
    if engine is engines.PysharkEngine and shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    with pytest.raises(engines.CaptureUnavailable) as info:
        engine(interface, bpf).start()

    assert words in str(info.value)
    assert "\n" not in str(info.value)


@live
def test_open_live_refuses_an_unknown_interface_before_starting_anything():
    with pytest.raises(engines.CaptureUnavailable, match="not found on this host"):
        sources.open_live("netmon-nope0", "", "basic")


@live
@pytest.mark.parametrize("depth", ["basic", "deep"])
def test_live_engines_chunks_carry_records_and_the_interface(depth):
    if depth == "deep" and shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    port = free_udp_port()
    engine = sources.open_live("lo", f"udp dst port {port}", depth)  # capturing when it returns
    send_udp(port, 30, delay=0)
    got = 0
    apps = 0
    deadline = time.monotonic() + 15
    for chunk in engine:
        got += len(chunk.records)
        apps += sum(1 for app in chunk.app.values() if app["app_protocol"])
        assert chunk.interfaces == ["lo"] and chunk.source == "lo"
        # the raw frames beside the records, in the same order (the evidence ring keeps them)
        assert [int(n) for f in chunk.frames for n in f.length] == chunk.records["length"].tolist()
        if got >= 30 or time.monotonic() > deadline:
            break
    engine.stop()
    assert got == 30
    assert apps == (30 if depth == "deep" else 0)


@live
def test_open_live_deep_fails_at_once_on_a_bad_filter():
    with pytest.raises(engines.CaptureUnavailable, match="invalid capture filter"):
        sources.open_live("lo", "udp prt 53", "deep")
    assert tshark_children() == []


@live
@tshark
def test_deep_engine_adds_application_fields_on_a_live_interface():
    port = free_udp_port()
    engine = engines.PysharkEngine("lo", f"udp dst port {port}", batch_size=10, max_delay=0.3)
    # A DNS query for example.org, sent to a port tshark decodes as DNS because of the payload.
    query = bytes.fromhex("123401000001000000000000076578616d706c65036f72670000010001")

    send_udp(port, 5, delay=3, payload=query, gap=0.05)  # tshark takes a moment to start
    records, apps = numbered(collect(engine, 5, timeout=30))

    assert len(records) == 5
    assert set(apps) == {int(r["seq"]) for r in records}
    assert all(app["app_protocol"] for app in apps.values())


def test_deep_engine_refuses_to_run_inside_an_event_loop():
    import asyncio

    async def inside() -> None:
        next(iter(engines.PysharkEngine("lo", "")))

    with pytest.raises(RuntimeError, match="event loop"):
        asyncio.run(inside())


# ---------------------------------------------------------------------------------------------
# deep mode on files: our reader's records, tshark's application fields


def fast_path_records(path: Path) -> np.ndarray:
    """What basic mode makes of a file (capture.sources.pcap_chunks), numbered from 0."""
    return numbered(list(sources.pcap_chunks(str(path), ReadStats(), 1000)))[0]


def run_deep(engine: engines.PysharkEngine) -> tuple[np.ndarray, dict[int, dict[str, str]]]:
    return numbered(list(engine))


def same_headers(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal records, but for the status (deep mode also flags what tshark finds malformed)."""
    names = [n for n in a.dtype.names if n != "status"]
    return len(a) == len(b) and all(np.array_equal(a[n], b[n]) for n in names)


def application_packets() -> list:
    eth = Ether(src=pcaps.MAC_A, dst=pcaps.MAC_B)
    hello = TLS(
        msg=[
            TLSClientHello(ext=[TLS_Ext_ServerName(servernames=[ServerName(servername=b"sni.example.org")])])
        ]
    )
    return [
        eth
        / IP(src="10.0.0.1", dst="10.0.0.53")
        / UDP(sport=33333, dport=53)
        / DNS(qd=DNSQR(qname="example.org")),
        eth
        / IP(src="10.0.0.1", dst="10.0.0.80")
        / TCP(sport=40001, dport=80, flags="PA", seq=1000)
        / Raw(b"GET /x HTTP/1.1\r\nHost: web.example\r\n\r\n"),
        eth / IP(src="10.0.0.1", dst="10.0.0.43") / TCP(sport=40002, dport=443, flags="PA", seq=5000) / hello,
    ]


@tshark
def test_deep_engine_on_a_file_gives_the_fast_path_records_and_application_fields(tmp_path):
    capture = pcaps._write(
        tmp_path / "apps.pcap", pcaps._frames(application_packets() + pcaps.ordinary_packets())
    )

    records, apps = run_deep(engines.PysharkEngine(capture.path, batch_size=4))

    assert same_headers(records, fast_path_records(capture.path))
    assert set(apps) == set(range(len(records)))
    dns, http, tls = apps[0], apps[1], apps[2]
    assert (dns["app_protocol"], dns["dns_query"]) == ("DNS", "example.org")
    assert (http["app_protocol"], http["http_host"], http["http_method"]) == ("HTTP", "web.example", "GET")
    assert (tls["app_protocol"], tls["tls_sni"]) == ("TLS", "sni.example.org")
    assert all(app["app_protocol"] for app in apps.values())


@tshark
def test_deep_engine_shares_a_file_out_between_tshark_processes_and_keeps_the_order(tmp_path):
    path = tmp_path / "synthetic.pcap"
    write_pcap(path, synthetic_records(3000, seed=11))
    engine = engines.PysharkEngine(path, batch_size=256, recycle_every=700, processes=2)

    records, apps = run_deep(engine)

    assert same_headers(records, fast_path_records(path))
    assert engine.tshark_started == engine.recycles == 5  # 3,000 packets in pieces of 700
    assert engine.app_missing == 0
    assert sorted(apps) == list(range(3000))
    # Each packet got its own fields: what tshark says matches what our decoder read.
    for rec in records:
        proto = apps[int(rec["seq"])]["app_protocol"]
        if rec["ip_version"] and rec["proto"] == 17:
            assert proto not in {"TCP", "ICMP", "ARP"}
        elif rec["ip_version"] and rec["proto"] == 6:
            assert proto not in {"UDP", "ICMP", "ARP"}
        elif not rec["ip_version"]:
            assert proto == "ARP"


@tshark
def test_deep_engine_flags_what_tshark_finds_malformed(tmp_path):
    eth = Ether(src=pcaps.MAC_A, dst=pcaps.MAC_B)
    short_dns = eth / IP(src="10.0.0.1", dst="10.0.0.53") / UDP(sport=33334, dport=53) / Raw(b"\x12\x34\x01")
    capture = pcaps._write(tmp_path / "malformed.pcap", pcaps._frames([short_dns, *application_packets()]))

    records, apps = run_deep(engines.PysharkEngine(capture.path))

    assert records["status"].tolist() == [engines.MALFORMED, 0, 0, 0]
    assert apps[0]["app_protocol"] == "DNS"


@tshark
def test_deep_engine_on_a_file_with_one_process_and_no_recycling(tmp_path):
    capture = pcaps._write(tmp_path / "apps.pcap", pcaps._frames(application_packets()))
    engine = engines.PysharkEngine(capture.path, recycle_every=0, processes=1)

    records, apps = run_deep(engine)

    assert len(records) == 3 and engine.tshark_started == 1
    assert apps[0]["dns_query"] == "example.org"


# ---------------------------------------------------------------------------------------------
# deep mode live: dumpcap's packets go to our decoder and, through a pipe, to tshark


def tshark_children() -> list[int]:
    """Our child processes named tshark or dumpcap (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        if ppid == os.getpid() and name in {"tshark", "dumpcap"}:
            found.append(int(stat.parent.name))
    return found


@live
@tshark
def test_deep_engine_restarts_tshark_on_a_live_link_without_losing_packets():
    port = free_udp_port()
    engine = engines.PysharkEngine(
        "lo", f"udp dst port {port}", batch_size=50, max_delay=0.2, recycle_every=100
    )
    engine.start()  # dumpcap is capturing when start() returns
    query = bytes(DNS(id=7, qd=DNSQR(qname="example.org")))

    send_udp(port, 450, delay=0, payload=query, gap=0.003)
    chunks = collect(engine, 450, timeout=60)

    records, apps = numbered(chunks)
    seqs = records["seq"].tolist()
    assert seqs == list(range(450))
    assert set(apps) == set(seqs)
    assert {app["dns_query"] for app in apps.values()} == {"example.org"}
    assert engine.recycles == 4 and engine.app_skipped == 0  # a new tshark every 100 packets
    assert all(len(c.records) <= 50 for c in chunks)
    assert tshark_children() == []


@live
@pytest.mark.parametrize("kind", ["basic", "deep"])
def test_engines_stop_when_asked_from_another_thread(kind):
    if kind == "deep" and shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    bpf = f"udp dst port {free_udp_port()}"
    engine = engines.DumpcapEngine("lo", bpf) if kind == "basic" else engines.PysharkEngine("lo", bpf)
    engine.start()
    threading.Timer(1.0, engine.stop).start()  # as the runner's interrupt does
    started = time.monotonic()

    for _ in engine:  # empty batches every max_delay until the stop
        assert time.monotonic() - started < 10

    assert time.monotonic() - started < 5
    assert tshark_children() == []

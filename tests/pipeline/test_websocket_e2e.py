"""The live WebSocket end to end with real processes: pcap -> capture -> Redis -> Celery -> daphne -> client.

A real daphne serves /ws/monitor/, a real Celery worker stores and scores what the capture
command publishes from a pcap with a port scan in it, and a WebSocket client (token in the query
string) receives ``packet_captured``, ``stats`` and ``anomaly_detected`` for that sensor.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from bench.latency import MonitorClient  # a small stdlib WebSocket client; no client library is installed
from capture.demo import DemoTraffic
from capture.pcapwriter import write_pcap
from capture.records import ip_to_text
from detection.models import Anomaly, DetectionModel
from tests import processes

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SENSOR = "ws-e2e"
RATE = 5000  # packets/s from the pcap: a few seconds of capture, so several stats messages


def scan_records(n: int = 8000) -> np.ndarray:
    """Benign demo traffic with one port scan injected in its first simulated second."""
    traffic = DemoTraffic(seed=7, attack_prob=0.0)
    traffic.inject("port_scan")
    return traffic.records(n)


async def listen(url: str, until: float, greeted: asyncio.Event, scanner: str) -> list[tuple[float, dict]]:
    """Every message for ``until`` seconds, or until all three kinds arrived for the sensor (a
    ``stats`` counting only once it shows traffic: the first one may come before any packet; an
    ``anomaly_detected`` only once one is the scanner's: a read's highest-scoring anomaly may be a
    benign packet's, since a model flags some of those too)."""
    client = await MonitorClient.connect(url)
    messages: list[tuple[float, dict]] = []
    try:
        deadline = time.monotonic() + until
        seen: set[str] = set()
        while time.monotonic() < deadline and not {"packet_captured", "stats", "anomaly_detected"} <= seen:
            try:
                arrived, message = await asyncio.wait_for(client.messages.get(), 1.0)
            except TimeoutError:
                if client.closed.done():
                    raise AssertionError(f"the server closed the socket ({client.close_code})") from None
                continue
            messages.append((arrived, message))
            sensor = message.get("sensor") or (message.get("anomaly") or {}).get("sensor")
            counts = {
                "stats": message.get("packets_per_s", 0) > 0,
                "anomaly_detected": (message.get("anomaly") or {}).get("src_ip") == scanner,
            }.get(message["type"], True)
            if sensor == SENSOR and counts:
                seen.add(message["type"])
            if message["type"] == "connected":
                greeted.set()
    finally:
        await client.close()
    return messages


async def capture_while_listening(
    url: str, pcap: str, timeout: float, scanner: str
) -> list[tuple[float, dict]]:
    """Connect first, then run the capture command, so that nothing is missed."""
    greeted = asyncio.Event()
    listener = asyncio.create_task(listen(url, timeout, greeted, scanner))
    waiter = asyncio.create_task(greeted.wait())
    await asyncio.wait({listener, waiter}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if listener.done():
        return listener.result()  # raises what went wrong
    assert greeted.is_set(), "no connected greeting within 15 s"
    result = await asyncio.to_thread(
        processes.run_capture, "--pcap", pcap, "--sensor", SENSOR, "--rate", str(RATE), timeout=60
    )
    assert result.returncode == 0, result.stderr
    return await listener


def test_client_receives_packets_stats_and_anomalies_from_a_pcap(tmp_path, settings, user, redis_client):
    # Given an active model trained on benign traffic, and the stack running
    settings.NETMON_MODEL_DIR = tmp_path / "models"  # process_env() hands it to the worker
    benign = tmp_path / "benign.pcap"
    write_pcap(benign, DemoTraffic(seed=1, attack_prob=0.0).records(12_000))
    # ml_model may only name a kind with an active model: train it, then use it
    call_command(
        "train_detector",
        "--pcap",
        str(benign),
        "--model",
        "isolation_forest",
        "--feature-level",
        "standard",
        "--use",
    )
    model = DetectionModel.objects.get(is_active=True)
    records = scan_records()
    pcap = tmp_path / "scan.pcap"
    write_pcap(pcap, records)
    scanner = ip_to_text(records["src_ip"][records["label"] == 1][0], 4)
    token = Token.objects.create(user=user).key
    daphne, port = processes.start_daphne()
    worker = processes.start_worker(concurrency=1, name="ws-e2e-worker")
    with processes.running(daphne, worker):
        # When the capture command reads the pcap while a client listens
        url = f"ws://127.0.0.1:{port}/ws/monitor/?token={token}"
        messages = asyncio.run(capture_while_listening(url, str(pcap), timeout=90, scanner=scanner))
        logs = f"--- daphne\n{daphne.log()[-2000:]}\n--- worker\n{worker.log()[-2000:]}"

    # Then the client got the three live streams for the sensor
    def of(kind: str) -> list[tuple[float, dict]]:
        return [
            (arrived, m)
            for arrived, m in messages
            if m["type"] == kind and (m.get("sensor") or m.get("anomaly", {}).get("sensor")) == SENSOR
        ]

    packets, stats, anomalies = of("packet_captured"), of("stats"), of("anomaly_detected")
    assert packets, f"no packet_captured; got {[m['type'] for _, m in messages]}\n{logs}"
    assert stats, f"no stats; got {[m['type'] for _, m in messages]}\n{logs}"
    assert anomalies, f"no anomaly_detected; got {[m['type'] for _, m in messages]}\n{logs}"

    # packet_captured: real packets of the pcap, stamped with when capture read them
    for arrived, message in packets:
        assert message["first_read_at"] <= message["read_at"] <= arrived
        assert message["dropped"] >= 0
    shown = [p for _, m in packets for p in m["packets"]]
    assert {p["sensor"] for p in shown} == {SENSOR}
    assert all(1 <= p["seq"] <= len(records) for p in shown)
    assert {"src_ip", "dst_ip", "protocol", "length", "ts"} <= set(shown[0])

    # stats: the capture process's per-second view of the traffic
    busy = [m for _, m in stats if m["packets_per_s"] > 0]
    assert busy, f"every stats message says 0 packets/s: {stats}"
    assert busy[0]["bytes_per_s"] > 0
    assert busy[0]["protocols"]
    assert busy[0]["top_talkers"]

    # anomaly_detected: a stored anomaly of the scanner, scored by the active model, with a reason
    of_scanner = [(arrived, m) for arrived, m in anomalies if m["anomaly"]["src_ip"] == scanner]
    assert of_scanner, f"no anomaly of the scanner {scanner}: {[m['anomaly'] for _, m in anomalies]}"
    arrived, message = of_scanner[0]
    anomaly = message["anomaly"]
    assert anomaly["score"] > anomaly["threshold"] == pytest.approx(model.threshold)
    assert anomaly["explanation"]
    assert anomaly["model"] == "isolation_forest"
    assert 0 < anomaly["read_at"] <= arrived
    stored = Anomaly.objects.get(pk=anomaly["id"])
    assert stored.packet_seq == anomaly["packet_seq"]
    assert stored.sensor.name == SENSOR

"""The capture command end to end with real processes: pcap -> Redis -> Celery worker -> database."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import pytest

from capture import control
from capture.models import Flow, IngestedBatch, Packet, Sensor
from capture.pcapwriter import synthetic_records, write_pcap
from tests import processes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


@pytest.fixture(scope="module")
def worker(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        proc = processes.start_worker(concurrency=2, name="pipeline-worker")
    yield proc
    proc.stop()


def capinfos_count(path) -> int:
    out = subprocess.run(
        ["capinfos", "-c", "-M", str(path)], capture_output=True, text=True, check=False
    ).stdout
    return int(re.search(r"Number of packets:\s+(\d+)", out).group(1))


def stored(sensor: str) -> int:
    return Packet.objects.filter(sensor__name=sensor).count()


def wait_stored(sensor: str, n: int, timeout: float = 60) -> None:
    processes.wait_until(
        lambda: stored(sensor) >= n, timeout=timeout, message=f"{n} packets of {sensor} stored"
    )


@pytest.mark.skipif(shutil.which("capinfos") is None, reason="capinfos (tshark) is not installed")
def test_every_packet_of_a_pcap_is_stored_exactly_once(worker, tmp_path, redis_client):
    pcap = tmp_path / "traffic.pcap"
    write_pcap(pcap, synthetic_records(5000, seed=1))

    result = processes.run_capture(
        "--pcap", str(pcap), "--sensor", "p1", "--summary-json", str(tmp_path / "s.json")
    )

    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["totals"]["packets_read"] == capinfos_count(pcap) == 5000
    assert summary["totals"]["published"] == 5000
    assert summary["files"][0]["file"]["frames"] == 5000
    wait_stored("p1", 5000)
    time.sleep(1)  # nothing more may arrive
    assert stored("p1") == 5000
    seqs = list(Packet.objects.filter(sensor__name="p1").order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, 5001))
    sensor = Sensor.objects.get(name="p1")
    assert sensor.packets_read == sensor.packets_stored == 5000
    assert Flow.objects.filter(sensor=sensor).exists()


def test_reading_the_same_pcap_again_stores_nothing_twice(worker, tmp_path, redis_client):
    pcap = tmp_path / "again.pcap.gz"
    write_pcap(pcap, synthetic_records(3000, seed=2))

    first = processes.run_capture("--pcap", str(pcap), "--sensor", "p2")
    wait_stored("p2", 3000)
    second = processes.run_capture(
        "--pcap", str(pcap), "--sensor", "p2", "--summary-json", str(tmp_path / "s.json")
    )

    assert first.returncode == second.returncode == 0
    assert json.loads((tmp_path / "s.json").read_text())["totals"]["skipped_already_published"] == 3000
    time.sleep(2)
    assert stored("p2") == 3000


def test_killed_capture_resumes_without_duplicates(worker, tmp_path, redis_client):
    pcap = tmp_path / "slow.pcap"
    write_pcap(pcap, synthetic_records(4000, seed=3))
    proc = processes.start_capture(
        "--pcap", str(pcap), "--sensor", "p3", "--rate", "2000", "--batch-size", "200"
    )
    processes.wait_until(lambda: stored("p3") > 500, timeout=60, message="some packets stored")
    proc.kill()  # kill -9, mid-file
    proc.stop()

    result = processes.run_capture("--pcap", str(pcap), "--sensor", "p3")

    assert result.returncode == 0, result.stderr
    wait_stored("p3", 4000)
    time.sleep(2)
    assert stored("p3") == 4000
    assert Packet.objects.filter(sensor__name="p3").values("seq").distinct().count() == 4000


def test_garbage_and_empty_files_are_reported_not_fatal(worker, tmp_path, redis_client):
    garbage = tmp_path / "garbage.pcap"
    garbage.write_bytes(b"this is not a capture file at all" * 10)
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    good = tmp_path / "good.pcap"
    write_pcap(good, synthetic_records(100, seed=4))

    result = processes.run_capture(
        "--pcap",
        str(garbage),
        str(empty),
        str(good),
        "--sensor",
        "p4",
        "--summary-json",
        str(tmp_path / "s.json"),
    )

    assert result.returncode == 1
    assert "garbage.pcap" in result.stderr and "empty.pcap" in result.stderr
    assert "Traceback" not in result.stderr
    files = {f["source"]: f for f in json.loads((tmp_path / "s.json").read_text())["files"]}
    assert "error" in files[str(garbage)]["file"]
    assert files[str(good)]["published"] == 100
    wait_stored("p4", 100)


def test_missing_interface_falls_back_to_demo_with_the_reason(worker, redis_client, api):
    result = processes.run_capture("--interface", "eth99", "--sensor", "p5", "--duration", "4")

    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "eth99" in line]
    assert len(lines) == 1
    assert "switching to demo mode" in lines[0]
    assert "Traceback" not in result.stderr
    sensor = Sensor.objects.get(name="p5")
    assert sensor.mode == "demo"
    assert "eth99" in sensor.mode_reason
    assert sensor.packets_read > 0
    status = api.get("/api/status").json()
    assert {s["sensor"]: s["mode"] for s in status["sensors"]}["p5"] == "demo"


def test_start_and_stop_through_redis(worker, redis_client):
    proc = processes.start_capture("--demo", "--sensor", "p6", "--rate", "500")
    with processes.running(proc):
        processes.wait_until(lambda: stored("p6") > 50, timeout=60, message="demo packets stored")

        control.request_capture("stop", sensor="p6", client=redis_client)
        processes.wait_until(
            lambda: control.read_heartbeats(redis_client).get("p6", {}).get("state") == "stopped", timeout=20,
            message="capture stopped",
        )  # fmt: skip
        time.sleep(1.5)  # let the workers finish what was published
        paused_at = Sensor.objects.get(name="p6").packets_read
        time.sleep(2)
        assert Sensor.objects.get(name="p6").packets_read == paused_at

        control.request_capture("start", sensor="p6", client=redis_client)
        processes.wait_until(
            lambda: Sensor.objects.get(name="p6").packets_read > paused_at + 50, timeout=20, message="resumed"
        )
    assert Sensor.objects.get(name="p6").state == "exited"


def test_two_workers_never_store_a_batch_twice(worker, tmp_path, redis_client):
    second = processes.start_worker(concurrency=2, name="second-worker")
    with processes.running(second):
        pcap = tmp_path / "big.pcap"
        write_pcap(pcap, synthetic_records(20000, seed=5))
        result = processes.run_capture("--pcap", str(pcap), "--sensor", "p7", "--batch-size", "250")
        assert result.returncode == 0, result.stderr
        wait_stored("p7", 20000, timeout=120)
        time.sleep(2)
    assert stored("p7") == 20000
    assert IngestedBatch.objects.filter(sensor__name="p7").count() == 80


@pytest.mark.skipif(shutil.which("dumpcap") is None, reason="dumpcap (tshark) is not installed")
def test_live_capture_on_loopback_stores_the_filtered_packets(worker, redis_client):
    import socket
    import threading

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    probe = subprocess.run(
        ["dumpcap", "-i", "lo", "-c", "1", "-a", "duration:1", "-w", "/dev/null", "-q"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"cannot capture on lo here: {probe.stderr.strip()[:100]}")

    done = threading.Event()

    def send() -> None:
        # Keep sending until the capture has what it needs: it starts at its own pace.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not done.wait(0.02):
                s.sendto(b"netmon", ("127.0.0.1", port))

    threading.Thread(target=send, daemon=True).start()
    try:
        result = processes.run_capture(
            "--interface", "lo", "--bpf", f"udp dst port {port}", "--count", "100", "--sensor", "live1",
            "--summary-json", "/dev/stdout",
        )  # fmt: skip
    finally:
        done.set()

    assert result.returncode == 0, result.stderr
    assert "switching to demo mode" not in result.stderr
    wait_stored("live1", 100)
    sensor = Sensor.objects.get(name="live1")
    assert sensor.mode == Sensor.Mode.LIVE
    assert set(Packet.objects.filter(sensor=sensor).values_list("dst_port", flat=True)) == {port}

"""Exports end to end: API -> real Celery worker -> encrypted file -> download -> decrypt (two ways)."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.management import CommandError, call_command

from capture.connections import redis_client
from capture.models import Packet, Sensor
from exports.models import ExportJob, RecipientKey
from tests import processes
from tests.conftest import token_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

KEY_256 = base64.b64encode(b"k" * 32).decode()
KEY_192 = base64.b64encode(b"j" * 24).decode()
HMAC = base64.b64encode(b"h" * 32).decode()
PASSPHRASE = "correct horse battery staple"


def rsa_pair(bits: int = 2048) -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return public.decode(), private


@pytest.fixture(scope="module")
def keys_env():
    """Export keys in the environment, as the settings (and the worker) read them."""
    os.environ.update(NETMON_EXPORT_KEYS=f"k256:{KEY_256},k192:{KEY_192}", NETMON_EXPORT_HMAC_KEY=HMAC)
    yield
    os.environ.pop("NETMON_EXPORT_KEYS")
    os.environ.pop("NETMON_EXPORT_HMAC_KEY")


@pytest.fixture(autouse=True)
def key_settings(settings, tmp_path, keys_env):
    settings.NETMON_EXPORT_KEYS = os.environ["NETMON_EXPORT_KEYS"]
    settings.NETMON_EXPORT_HMAC_KEY = HMAC


@pytest.fixture(scope="module")
def worker(django_db_setup, django_db_blocker, keys_env):
    with django_db_blocker.unblock():
        proc = processes.start_worker(concurrency=1, name="export-worker")
    yield proc
    proc.stop()


@pytest.fixture
def packets():
    sensor = Sensor.objects.create(name="s1")
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    Packet.objects.bulk_create(
        Packet(
            sensor=sensor, seq=i, ts=t0 + timedelta(seconds=i), protocol="TCP" if i % 2 else "UDP",
            ip_version=4,
            src_ip=f"10.0.0.{i % 5 + 1}", dst_ip="192.0.2.7", src_port=1000 + i, dst_port=443, length=60 + i,
            dns_query='evil,"quoted"\nname' if i == 3 else "",
        )
        for i in range(1, 121)
    )  # fmt: skip
    return sensor


def create(api, **body):
    response = api.post("/api/exports/", body, format="json")
    assert response.status_code == 202, response.json()
    return response.json()


def wait_done(api, job_id: str) -> dict:
    return processes.wait_until(
        lambda: (j := api.get(f"/api/exports/{job_id}/").json())["status"] in {"succeeded", "failed"} and j,
        timeout=60, message=f"export {job_id}",
    )  # fmt: skip


def download(api, job: dict, tmp_path: Path) -> Path:
    response = api.get(job["download_url"])
    assert response.status_code == 200
    path = tmp_path / "export.nmx"
    path.write_bytes(b"".join(response.streaming_content))
    return path


def parse(fmt: str, data: bytes) -> list[dict]:
    text = data.decode()
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(text, newline="")))
    if fmt == "json":
        return [json.loads(line) for line in text.splitlines()]
    return json.loads(text)


def expected_rows() -> list[tuple]:
    return list(Packet.objects.order_by("seq").values_list("seq", "src_ip", "dns_query", "length"))


def as_tuples(fmt: str, rows: list[dict]) -> list[tuple]:
    return [(int(r["seq"]), r["src_ip"], r["dns_query"], int(r["length"])) for r in rows]


CASES = [
    ("AES-256", {"key_id": "k256"}, ["--key-id", "k256"], ["--key-b64", KEY_256]),
    ("AES-192", {"key_id": "k192"}, ["--key-id", "k192"], ["--key-b64", KEY_192]),
    ("AES-256", {"passphrase": PASSPHRASE}, "passphrase", ["--passphrase", PASSPHRASE]),
    ("RSA", "rsa", "rsa", "rsa"),
    ("SHA", {}, [], None),
]


@pytest.mark.parametrize("fmt", ["json", "json-array", "csv"])
@pytest.mark.parametrize("algorithm,request_keys,cli_keys,example_keys", CASES)
def test_round_trip_every_algorithm_and_format(
    api, worker, packets, tmp_path, fmt, algorithm, request_keys, cli_keys, example_keys
):
    if request_keys == "rsa":
        public, private = rsa_pair()
        (tmp_path / "private.pem").write_bytes(private)
        request_keys = {"public_key_pem": public}
        cli_keys = example_keys = ["--private-key", str(tmp_path / "private.pem")]
    if cli_keys == "passphrase":
        (tmp_path / "pass").write_text(PASSPHRASE + "\n")
        cli_keys = ["--passphrase-file", str(tmp_path / "pass")]

    job = wait_done(
        api, create(api, dataset="packets", format=fmt, algorithm=algorithm, **request_keys)["id"]
    )

    assert job["status"] == "succeeded", job["error"]
    assert job["row_count"] == 120
    encrypted = download(api, job, tmp_path)
    assert job["size_bytes"] == encrypted.stat().st_size
    call_command("decrypt_export", str(encrypted), *cli_keys, "--out", str(tmp_path / "plain"))
    plain = (tmp_path / "plain").read_bytes()
    assert as_tuples(fmt, parse(fmt, plain)) == expected_rows()
    if algorithm == "SHA":
        assert b"192.0.2.7" in encrypted.read_bytes()  # integrity only: the data is readable
    else:
        assert b"192.0.2.7" not in encrypted.read_bytes()
    if example_keys is not None:
        example = subprocess.run(
            [sys.executable, "docs/decrypt_example.py", str(encrypted), *example_keys],
            cwd=processes.ROOT, capture_output=True, check=False,
        )  # fmt: skip
        assert example.returncode == 0, example.stderr
        assert example.stdout == plain


def test_prototype_route_and_registered_recipient(api, worker, packets, tmp_path, settings):
    public, private = rsa_pair()
    RecipientKey.objects.create(name="soc", public_key_pem=public)
    settings.NETMON_EXPORT_KEYS = os.environ["NETMON_EXPORT_KEYS"]

    response = api.post(
        "/api/export", {"format": "csv", "algorithm": "RSA", "recipient": "soc"}, format="json"
    )

    assert response.status_code == 202
    job = wait_done(api, response.json()["id"])
    assert job["status"] == "succeeded"
    (tmp_path / "k.pem").write_bytes(private)
    encrypted = download(api, job, tmp_path)
    out = str(tmp_path / "p")
    call_command("decrypt_export", str(encrypted), "--private-key", str(tmp_path / "k.pem"), "--out", out)
    assert len(parse("csv", (tmp_path / "p").read_bytes())) == 120


def test_empty_result_is_a_valid_empty_export(api, worker, packets, tmp_path):
    job = wait_done(
        api,
        create(api, format="json-array", algorithm="AES-256", key_id="k256", filters={"ip": "203.0.113.1"})[
            "id"
        ],
    )

    assert job["status"] == "succeeded"
    assert job["row_count"] == 0
    call_command(
        "decrypt_export", str(download(api, job, tmp_path)), "--key-id", "k256", "--out", str(tmp_path / "p")
    )
    assert json.loads((tmp_path / "p").read_bytes()) == []


def test_filters_select_rows(api, worker, packets, tmp_path):
    job = wait_done(
        api,
        create(api, format="json", algorithm="AES-256", key_id="k256",
               filters={"protocol": "udp", "ip": "10.0.0.1", "since": "2026-03-01T00:00:30Z"})["id"],
    )  # fmt: skip

    call_command(
        "decrypt_export", str(download(api, job, tmp_path)), "--key-id", "k256", "--out", str(tmp_path / "p")
    )
    rows = parse("json", (tmp_path / "p").read_bytes())
    assert rows
    assert all(r["protocol"] == "UDP" and r["src_ip"] == "10.0.0.1" and r["seq"] >= 30 for r in rows)
    assert len(rows) == Packet.objects.filter(protocol="UDP", src_ip="10.0.0.1", seq__gte=30).count()


def test_tampered_file_and_wrong_keys_fail_loudly(api, worker, packets, tmp_path):
    job = wait_done(api, create(api, format="csv", algorithm="AES-256", passphrase=PASSPHRASE)["id"])
    encrypted = download(api, job, tmp_path)
    (tmp_path / "wrong").write_text("not the passphrase")

    with pytest.raises(CommandError, match="passphrase"):
        call_command("decrypt_export", str(encrypted), "--passphrase-file", str(tmp_path / "wrong"),
                     "--out", str(tmp_path / "p"))  # fmt: skip
    assert not (tmp_path / "p").exists()

    data = bytearray(encrypted.read_bytes())
    data[len(data) // 2] ^= 0x01
    encrypted.write_bytes(bytes(data))
    (tmp_path / "pass").write_text(PASSPHRASE)
    with pytest.raises(CommandError):
        call_command("decrypt_export", str(encrypted), "--passphrase-file", str(tmp_path / "pass"),
                     "--out", str(tmp_path / "p"))  # fmt: skip
    assert not (tmp_path / "p").exists()

    encrypted.write_bytes(encrypted.read_bytes()[:-100])
    with pytest.raises(CommandError):
        call_command("decrypt_export", str(encrypted), "--passphrase-file", str(tmp_path / "pass"),
                     "--out", str(tmp_path / "p"))  # fmt: skip


def test_failed_job_leaves_no_file(api, worker, packets, settings):

    body = create(api, format="csv", algorithm="AES-256", passphrase=PASSPHRASE)
    # (the worker may race us; either it used the passphrase or finds it gone)
    redis_client().delete(f"netmon:export:secret:{body['id']}")
    job = wait_done(api, body["id"])

    if job["status"] == "failed":
        assert "passphrase" in job["error"]
        assert not list(Path(settings.NETMON_EXPORT_DIR).glob(f"*{body['id']}*"))
    else:  # the worker was faster than the delete: the file is complete and verifiable
        assert job["file_sha256"]


@pytest.mark.parametrize(
    "body,field,message",
    [
        ({"algorithm": "DES"}, "algorithm", "is not one of"),
        ({"format": "xml"}, "format", "is not one of"),
        ({"dataset": "users"}, "dataset", "is not one of"),
        ({"algorithm": "AES-256", "key_id": "nope"}, "key_id", "unknown key id 'nope'"),
        ({"algorithm": "AES-192", "key_id": "k256"}, "key_id", "is not a AES-192 key"),
        ({"algorithm": "AES-256"}, "key_id", "exactly one of key_id"),
        ({"algorithm": "AES-256", "passphrase": "short"}, "passphrase", "at least 8"),
        ({"algorithm": "RSA"}, "recipient", "exactly one of"),
        ({"algorithm": "RSA", "recipient": "nobody"}, "recipient", "no recipient key named 'nobody'"),
        ({"algorithm": "RSA", "public_key_pem": "-----BEGIN PUBLIC KEY-----\nxx"}, "public_key_pem", ""),
        ({"algorithm": "AES-256", "key_id": "k256", "filters": {"port": "x"}}, "filters.port", "integer"),
        (
            {"algorithm": "AES-256", "key_id": "k256", "filters": {"since": "soon"}},
            "filters.since",
            "ISO 8601",
        ),
        ({"algorithm": "AES-256", "key_id": "k256", "colour": 1}, "colour", "unknown field"),
    ],
)
def test_invalid_requests_name_the_field(api, body, field, message):
    response = api.post("/api/exports/", body, format="json")

    assert response.status_code == 400
    assert message in response.json()["fields"][field]
    assert ExportJob.objects.count() == 0


def test_rsa_key_under_2048_bits_is_refused(api):
    public, _ = rsa_pair(1024)

    response = api.post("/api/exports/", {"algorithm": "RSA", "public_key_pem": public}, format="json")

    assert response.status_code == 400
    assert "2048" in response.json()["fields"]["public_key_pem"]


def test_sha_mode_without_server_key_is_refused(api, settings):
    settings.NETMON_EXPORT_HMAC_KEY = ""

    response = api.post("/api/exports/", {"algorithm": "SHA"}, format="json")

    assert response.status_code == 400
    assert "NETMON_EXPORT_HMAC_KEY" in response.json()["fields"]["algorithm"]


def test_other_users_exports_are_invisible(api, worker, packets, other_user, tmp_path):

    job = wait_done(api, create(api, algorithm="AES-256", key_id="k256")["id"])
    path = Path(ExportJob.objects.get(pk=job["id"]).file_path)
    assert job["status"] == "succeeded" and path.is_file()
    bob = token_client(other_user)

    assert bob.get(f"/api/exports/{job['id']}/").status_code == 404
    assert bob.get(f"/api/exports/{job['id']}/download").status_code == 404
    assert bob.delete(f"/api/exports/{job['id']}/").status_code == 404
    assert path.is_file()  # bob's delete touched nothing
    assert bob.get("/api/exports/").json() == []
    assert api.delete(f"/api/exports/{job['id']}/").status_code == 204
    assert not ExportJob.objects.exists()
    # the owner's delete takes the encrypted file with it: nothing of this export is left behind
    assert not path.exists()
    assert not list(path.parent.glob(f"*{job['id']}*"))


def test_expiry_removes_old_files(api, worker, packets):
    from exports.services import expire_exports

    job = wait_done(api, create(api, algorithm="AES-256", key_id="k256")["id"])
    path = ExportJob.objects.get(pk=job["id"]).file_path

    assert expire_exports(0, now=datetime.now(UTC) + timedelta(seconds=5)) == 1
    assert not Path(path).exists()
    assert api.get(f"/api/exports/{job['id']}/").json()["status"] == "expired"
    assert api.get(f"/api/exports/{job['id']}/download").status_code == 409


@pytest.mark.parametrize("path", ["/api/exports/", "/api/export"])
def test_export_endpoints_need_authentication(anon, path):
    assert anon.post(path, {}, format="json").status_code == 401


@pytest.mark.parametrize(
    "body,unused",
    [
        ({"algorithm": "SHA", "passphrase": "correct horse battery"}, ["passphrase"]),
        ({"algorithm": "SHA", "key_id": "k256", "recipient": "x"}, ["key_id", "recipient"]),
        ({"algorithm": "SHA", "passphrase": 5}, ["passphrase"]),  # was a 500 (5 has no encode())
        ({"algorithm": "RSA", "recipient": "x", "passphrase": "correct horse battery"}, ["passphrase"]),
        ({"algorithm": "AES-256", "key_id": "k256", "public_key_pem": "pem"}, ["public_key_pem"]),
    ],
)
def test_key_fields_the_algorithm_does_not_use_are_refused_not_ignored(api, body, unused):
    response = api.post("/api/exports/", body, format="json")

    assert response.status_code == 400
    fields = response.json()["fields"]
    assert sorted(fields) == unused
    assert all(f"{body['algorithm']} does not use {key}" in fields[key] for key in unused)
    assert ExportJob.objects.count() == 0


def test_sha_refusal_says_it_is_integrity_only(api):
    response = api.post(
        "/api/exports/", {"algorithm": "SHA", "passphrase": "a long passphrase"}, format="json"
    )

    assert "integrity and does not encrypt" in response.json()["fields"]["passphrase"]


def test_a_user_may_have_only_so_many_exports_queued_or_running(api, user, other_user, settings):
    settings.NETMON_EXPORT_MAX_ACTIVE_PER_USER = 2
    body = {"dataset": "packets", "format": "csv", "algorithm": "SHA"}
    running = ExportJob.objects.create(owner=user, algorithm="SHA", status=ExportJob.Status.RUNNING)
    ExportJob.objects.create(owner=user, algorithm="SHA", status=ExportJob.Status.QUEUED)
    ExportJob.objects.create(owner=user, algorithm="SHA", status=ExportJob.Status.SUCCEEDED)  # done: free

    refused = api.post("/api/exports/", body, format="json")

    assert refused.status_code == 429
    assert "at most 2 at once" in refused.json()["detail"]
    assert "NETMON_EXPORT_MAX_ACTIVE_PER_USER" in refused.json()["detail"]
    assert ExportJob.objects.filter(owner=user).count() == 3
    # another user is not held back by alice's exports
    assert token_client(other_user).post("/api/exports/", body, format="json").status_code == 202
    # a finished export frees its place
    ExportJob.objects.filter(pk=running.pk).update(status=ExportJob.Status.FAILED)
    assert api.post("/api/exports/", body, format="json").status_code == 202

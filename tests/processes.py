"""Real processes for integration tests: a Celery worker, daphne, the capture command.

They run against the test database (a file for SQLite, test_<name> for PostgreSQL) and the test
Redis database, so tests using them must be ``django_db(transaction=True)`` (data committed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOG_DIR = ROOT / "test-output" / "logs"


def test_database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def process_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        NETMON_ENV="test",
        DATABASE_URL=test_database_url(),
        REDIS_URL=settings.REDIS_URL,
        SECRET_KEY=settings.SECRET_KEY,
        NETMON_EXPORT_DIR=str(settings.NETMON_EXPORT_DIR),
        NETMON_MODEL_DIR=str(settings.NETMON_MODEL_DIR),
        NETMON_EVIDENCE_DIR=str(settings.NETMON_EVIDENCE_DIR),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A started process with its log file; ``wait_for(text)`` polls the log."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]):
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = LOG_DIR / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"{self.name}: no {text!r} after {timeout}s:\n{self.log()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.popen.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()
        return self.popen.returncode


def start_worker(
    concurrency: int = 1, name: str = "worker", queues: str = "celery,exports", **env: str
) -> Proc:
    """A Celery worker; by default it serves both queues (ingest and the rest, and exports)."""
    proc = Proc(
        name,
        [str(BIN / "celery"), "-A", "netmon", "worker", "-l", "info", "--concurrency", str(concurrency),
         "-Q", queues, "--without-gossip", "--without-mingle", "-n", f"{name}-{time.monotonic_ns()}@%h"],
        process_env(**env),
    )  # fmt: skip
    proc.wait_for("ready.", timeout=90)
    return proc


def start_daphne(port: int | None = None) -> tuple[Proc, int]:
    port = port or free_port()
    proc = Proc(
        "daphne",
        [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "netmon.asgi:application"],
        process_env(),
    )
    proc.wait_for("Listening on TCP address", timeout=60)
    return proc, port


def start_capture(*args: str, name: str = "capture") -> Proc:
    return Proc(name, [sys.executable, "manage.py", "capture", *args], process_env())


def run_capture(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "capture", *args], cwd=ROOT, env=process_env(), capture_output=True,
        text=True, timeout=timeout, check=False,
    )  # fmt: skip


@contextlib.contextmanager
def running(*procs: Proc) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            proc.stop()


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {message}")

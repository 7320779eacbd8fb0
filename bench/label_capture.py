"""Helpers of ``bench/make_labeled_capture.sh``: loopback traffic generators and the labeler.

Standard library only (the script runs it with ``python3``; the project's venv works too).

    label_capture.py site DIR                      # static pages for ``python3 -m http.server``
    label_capture.py servers --addr A              # DNS-like UDP responder + SSH-like TCP server
    label_capture.py wait --addr A --tcp P [P ..]  # until those TCP ports accept connections
    label_capture.py benign --server A ...         # benign clients, each from its own address
    label_capture.py http-flood --src S ...        # HTTP GET flood from one address, bounded rate
    label_capture.py brute-force --src S ...       # many short logins to the SSH-like server
    label_capture.py slowloris --src S ...         # HTTP connections held open with partial requests
    label_capture.py discard --addr A --port P     # a TCP listener that reads and discards
    label_capture.py bulk --src S ...              # one large transfer to a discard listener
    label_capture.py label --pcap F --phases P --out labels.csv

Addresses: every generator binds its own source address in 127.0.0.0/8 (all of it is local on
Linux; the Redis clients, which Redis in protected mode only accepts from 127.0.0.1, bind fixed
source ports instead), so a packet's label follows from its addresses: a packet from or to an
attacker's address is that attack's packet (requests and the victim's replies alike); everything
else is benign.
``label`` reads the capture with ``tshark -T fields -e frame.number -e frame.time_epoch -e ip.src
-e ip.dst`` and writes ``frame,label,attack`` (frames numbered from 1 as in Wireshark); the phase
file (``attack,address,start,end`` in epoch seconds, written by the script) names the attack of
each address and lets it report attack packets seen outside their phase (late replies, say).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import http.client
import os
import random
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

# ----------------------------------------------------------------------------------------- site

PAGES = {
    "index.html": 2_400,
    "news.html": 9_000,
    "about.html": 3_500,
    "docs/guide.html": 28_000,
    "docs/api.html": 14_000,
    "login.html": 1_800,
    "search.html": 5_200,
}
ASSETS = {
    "static/app.css": 12_000,
    "static/app.js": 46_000,
    "static/logo.png": 7_500,
    "static/photo.jpg": 120_000,
    "static/font.woff2": 22_000,
    "favicon.ico": 1_150,
}


def cmd_site(args: argparse.Namespace) -> None:
    """Write pages and assets of realistic sizes under ``args.dir``."""
    rng = random.Random(7)
    root = Path(args.dir)
    words = [
        "network",
        "monitor",
        "packet",
        "flow",
        "host",
        "port",
        "anomaly",
        "traffic",
        "sensor",
        "capture",
        "report",
    ]
    for name, size in PAGES.items():
        body = []
        while sum(map(len, body)) < size:
            body.append("<p>" + " ".join(rng.choices(words, k=rng.randint(8, 30))) + ".</p>\n")
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"<!doctype html><html><head><title>{name}</title></head><body>{''.join(body)}</body></html>"
        )
    for name, size in ASSETS.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))


# -------------------------------------------------------------------------------------- servers


def dns_name(qname: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in qname.split(".")) + b"\0"


class DnsLikeHandler(socketserver.BaseRequestHandler):
    """Answers a DNS-format query with one A/AAAA record (anything shorter than a header: echo)."""

    def handle(self) -> None:
        data, sock = self.request
        if len(data) < 12:
            sock.sendto(data, self.client_address)
            return
        qid, _flags, qd = struct.unpack("!HHH", data[:6])
        question = data[12:]
        qtype = struct.unpack("!H", question[-4:-2])[0] if len(question) >= 5 else 1
        rdata = (
            bytes([10, 0, random.randint(0, 255), random.randint(1, 254)]) if qtype != 28 else os.urandom(16)
        )
        answer = struct.pack("!HHHIH", 0xC00C, qtype, 1, 300, len(rdata)) + rdata
        header = struct.pack("!HHHHHH", qid, 0x8180, qd, 1, 0, 0)
        sock.sendto(header + question + answer, self.client_address)


class SshLikeHandler(socketserver.BaseRequestHandler):
    """SSH-shaped exchange: banners, a key-exchange blob, echoed keystrokes, output after Enter."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(120)
        try:
            sock.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                if data.startswith(b"SSH-"):  # the client's banner, maybe with its key exchange
                    data = data.partition(b"\n")[2]
                    if not data:
                        continue
                if len(data) >= 400:  # the client's key exchange: answer with ours
                    sock.sendall(os.urandom(random.randint(900, 1400)))
                elif data[-1:] == b"\r":  # Enter: echo, then some command output
                    sock.sendall(os.urandom(len(data)))
                    time.sleep(random.uniform(0.005, 0.05))
                    for _ in range(random.randint(1, 4)):
                        sock.sendall(os.urandom(random.choice((68, 116, 228, 516, 1460, 2900))))
                else:  # a keystroke: its echo
                    sock.sendall(os.urandom(len(data)))
        except OSError:
            return


class _ThreadingUDP(socketserver.ThreadingMixIn, socketserver.UDPServer):
    daemon_threads = True
    allow_reuse_address = True


class _ThreadingTCP(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def cmd_servers(args: argparse.Namespace) -> None:
    udp = _ThreadingUDP((args.addr, args.udp_port), DnsLikeHandler)
    tcp = _ThreadingTCP((args.addr, args.ssh_port), SshLikeHandler)
    threading.Thread(target=udp.serve_forever, daemon=True).start()
    print(
        f"servers: DNS-like udp {args.addr}:{args.udp_port}, SSH-like tcp {args.addr}:{args.ssh_port}",
        flush=True,
    )
    tcp.serve_forever()


def cmd_wait(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.timeout
    for port in args.tcp:
        while True:
            try:
                socket.create_connection((args.addr, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit(f"{args.addr}:{port} does not accept connections after {args.timeout:g} s")
                time.sleep(0.1)


# --------------------------------------------------------------------------------------- benign


def _bound_tcp(src: str, host: str, port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((src, 0))
    sock.connect((host, port))
    return sock


def http_client(src: str, host: str, port: int, rng: random.Random, stop: threading.Event) -> None:
    """A person browsing: a page, then some of its assets, then reading for a while."""
    pages = [*PAGES, "missing.html"]
    while not stop.wait(rng.expovariate(1 / 1.2)):
        todo = [rng.choice(pages), *rng.sample(list(ASSETS), k=rng.choice((0, 0, 1, 2, 3)))]
        for path in todo:
            try:
                conn = http.client.HTTPConnection(host, port, timeout=5, source_address=(src, 0))
                conn.request("GET", "/" + path, headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"})
                conn.getresponse().read()
                conn.close()
            except OSError:
                pass
            if stop.wait(rng.uniform(0.01, 0.15)):
                return


def _resp(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for p in parts:
        b = p.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def redis_client(
    src: str, host: str, port: int, rng: random.Random, stop: threading.Event, db: int = 11
) -> None:
    """An application talking to Redis database ``db``: PING, GET and SET (with expiry) on its own keys.

    ``src`` is ``ADDRESS:PORT``: Redis in protected mode (no password) only accepts 127.0.0.1, so
    Redis clients are told apart by their source port instead (outside the ephemeral range, the
    next of ``REDIS_PORTS_EACH`` ports after a reconnect). One long-lived connection, as a pool.
    """
    addr, first = src.rsplit(":", 1)
    tries = 0
    while not stop.is_set():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.settimeout(5)
            sock.bind((addr, int(first) + tries % REDIS_PORTS_EACH))
            tries += 1
            sock.connect((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(_resp("SELECT", str(db)))
            if not sock.recv(4096).startswith(b"+OK"):
                raise OSError(f"redis refused SELECT {db}")
            while not stop.wait(rng.expovariate(1 / 0.08)):
                key = f"netmon:bench:{first}:{rng.randint(1, 50)}"
                op = rng.random()
                if op < 0.15:
                    sock.sendall(_resp("PING"))
                elif op < 0.7:
                    sock.sendall(_resp("GET", key))
                else:
                    sock.sendall(_resp("SET", key, "x" * rng.randint(4, 300), "EX", "120"))
                if not sock.recv(65536):
                    break
        except OSError:
            stop.wait(1.0)
        finally:
            sock.close()


REDIS_PORTS_EACH = 5


QNAMES = ["example.com", "netmon.local", "api.netmon.local", "db.internal", "mail.example.org",
          "cdn.example.net", "time.example.com", "updates.debian.org"]  # fmt: skip


def dns_client(src: str, host: str, port: int, rng: random.Random, stop: threading.Event) -> None:
    """A resolver's queries: A and AAAA lookups of a few names, now and then."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((src, 0))
    sock.settimeout(1.0)
    while not stop.wait(rng.expovariate(1 / 0.4)):
        name = rng.choice(QNAMES)
        for qtype in (1, 28) if rng.random() < 0.5 else (1,):
            query = struct.pack("!HHHHHH", rng.getrandbits(16), 0x0100, 1, 0, 0, 0)
            try:
                sock.sendto(query + dns_name(name) + struct.pack("!HH", qtype, 1), (host, port))
                sock.recvfrom(4096)
            except OSError:
                pass


def ssh_client(src: str, host: str, port: int, rng: random.Random, stop: threading.Event) -> None:
    """An interactive session: typing commands (small packets), reading output, logging out."""
    while not stop.is_set():
        try:
            sock = _bound_tcp(src, host, port)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.recv(256)
            sock.sendall(b"SSH-2.0-OpenSSH_9.2p1\r\n")
            sock.sendall(os.urandom(rng.randint(1000, 1500)))
            sock.recv(65536)
            end = time.monotonic() + rng.uniform(10, 40)
            while time.monotonic() < end and not stop.is_set():
                for _ in range(rng.randint(2, 12)):  # a command, key by key
                    if stop.wait(rng.uniform(0.08, 0.35)):
                        break
                    sock.sendall(os.urandom(36))
                    sock.recv(65536)
                sock.sendall(os.urandom(35) + b"\r")
                sock.settimeout(0.3)
                try:
                    while sock.recv(65536):
                        pass
                except TimeoutError:
                    pass
                sock.settimeout(5)
                stop.wait(rng.uniform(0.5, 4.0))  # reading the output
            sock.close()
        except OSError:
            pass
        stop.wait(rng.uniform(1, 5))


def cmd_benign(args: argparse.Namespace) -> None:
    stop = threading.Event()
    rng = random.Random(args.seed)
    redis_host, redis_port = args.redis.rsplit(":", 1)
    jobs = []
    for src in args.http_src:
        jobs.append((http_client, src, args.server, args.http_port))
    for src in args.redis_src:
        jobs.append((redis_client, src, redis_host, int(redis_port)))
    for src in args.dns_src:
        jobs.append((dns_client, src, args.server, args.udp_port))
    for src in args.ssh_src:
        jobs.append((ssh_client, src, args.server, args.ssh_port))
    for fn, src, host, port in jobs:
        r = random.Random(rng.getrandbits(64))
        extra = {"db": args.redis_db} if fn is redis_client else {}
        threading.Thread(target=fn, args=(src, host, port, r, stop), kwargs=extra, daemon=True).start()
    print(f"benign: {len(jobs)} clients", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait(args.seconds if args.seconds > 0 else None)
    stop.set()


# ------------------------------------------------------------------------------------- attacks


def cmd_http_flood(args: argparse.Namespace) -> None:
    """GET requests from ``--src`` at up to ``--rate`` per second for ``--seconds``, several threads."""
    paths = ["/", "/index.html", "/search.html", "/login.html"]

    def request() -> None:
        conn = http.client.HTTPConnection(args.host, args.port, timeout=3, source_address=(args.src, 0))
        conn.request("GET", random.choice(paths), headers={"User-Agent": "flood/1.0"})
        conn.getresponse().read()
        conn.close()

    done, failed = _paced(args.rate, args.seconds, args.threads, request)
    print(f"http-flood: {done} requests, {failed} failed", flush=True)


def _paced(rate: float, seconds: float, threads: int, job) -> tuple[int, int]:
    """``job()`` up to ``rate`` times a second for ``seconds`` from ``threads`` threads: (done, failed)."""
    end = time.monotonic() + seconds
    lock = threading.Lock()
    state = {"next": time.monotonic(), "done": 0, "failed": 0}

    def worker() -> None:
        while True:
            with lock:
                slot = state["next"]
                state["next"] = max(slot, time.monotonic() - 0.05) + 1.0 / rate
            if slot >= end:
                return
            delay = slot - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                job()
                key = "done"
            except OSError:
                key = "failed"
            with lock:
                state[key] += 1

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return state["done"], state["failed"]


PASSWORDS = ["123456", "password", "admin", "root", "letmein", "qwerty", "toor", "changeme", "dragon"]


def cmd_brute_force(args: argparse.Namespace) -> None:
    """Login attempts on the SSH-like server: connect, banner, a user and password line, close."""

    def attempt() -> None:
        with _bound_tcp(args.src, args.host, args.port, timeout=3) as sock:
            sock.recv(256)
            sock.sendall(b"SSH-2.0-libssh2_1.10.0\r\n")
            sock.sendall(f"root:{random.choice(PASSWORDS)}{random.randint(0, 999)}\r".encode())
            sock.settimeout(0.2)
            with contextlib.suppress(TimeoutError):
                sock.recv(65536)

    done, failed = _paced(args.rate, args.seconds, args.threads, attempt)
    print(f"brute-force: {done} attempts, {failed} failed", flush=True)


def cmd_slowloris(args: argparse.Namespace) -> None:
    """``--connections`` HTTP connections opened at ``--open-rate``/s, each with a partial request,
    then one more header line every ``--interval`` seconds; all closed after ``--seconds``."""
    end = time.monotonic() + args.seconds
    conns: list[socket.socket | None] = []
    failed = 0
    next_open = time.monotonic()
    last_sent: list[float] = []
    while time.monotonic() < end:
        now = time.monotonic()
        while len(conns) < args.connections and next_open <= now:
            next_open += 1.0 / args.open_rate
            try:
                sock = _bound_tcp(args.src, args.host, args.port, timeout=2)
                sock.sendall(
                    f"GET /?{random.randint(0, 99999)} HTTP/1.1\r\nHost: {args.host}\r\n"
                    "User-Agent: Mozilla/5.0\r\n".encode()
                )
                conns.append(sock)
                last_sent.append(now)
            except OSError:
                failed += 1
        for k, sock in enumerate(conns):
            if sock is not None and now - last_sent[k] >= args.interval:
                try:
                    sock.sendall(f"X-a-{random.randint(0, 9999)}: {random.randint(0, 9999)}\r\n".encode())
                    last_sent[k] = now
                except OSError:
                    sock.close()
                    conns[k] = None
        time.sleep(0.02)
    held = sum(1 for c in conns if c is not None)
    for sock in conns:
        if sock is not None:
            sock.close()
    print(f"slowloris: {len(conns)} connections opened ({held} held to the end), {failed} failed", flush=True)


def cmd_discard(args: argparse.Namespace) -> None:
    """A TCP listener that reads and discards whatever it is sent (the bulk transfer's receiver)."""
    server = socket.create_server((args.addr, args.port), reuse_port=False)
    server.settimeout(1.0)
    deadline = time.monotonic() + args.seconds if args.seconds > 0 else None

    def drain(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            with contextlib.suppress(OSError):
                while conn.recv(1 << 20):
                    pass

    print(f"discard: tcp {args.addr}:{args.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        while deadline is None or time.monotonic() < deadline:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=drain, args=(conn,), daemon=True).start()


def cmd_bulk(args: argparse.Namespace) -> None:
    """``--megabytes`` MB to ``--host``:``--port`` on one connection, paced evenly over ``--seconds``."""
    total = int(args.megabytes * 1_000_000)
    chunk = os.urandom(1 << 16)
    started = time.monotonic()
    sent = 0
    with _bound_tcp(args.src, args.host, args.port, timeout=10) as sock:
        while sent < total:
            due = started + args.seconds * sent / total
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sock.sendall(chunk[: min(len(chunk), total - sent)])
            sent += min(len(chunk), total - sent)
        sock.shutdown(socket.SHUT_WR)
    print(f"bulk: {sent / 1e6:.1f} MB in {time.monotonic() - started:.1f} s", flush=True)


# ------------------------------------------------------------------------------------- labeling


def read_phases(path: str) -> tuple[dict[str, str], dict[str, tuple[float, float]]]:
    """phases.csv rows ``attack,address,start,end`` -> ({address: attack}, {attack: (start, end)})."""
    by_addr: dict[str, str] = {}
    spans: dict[str, tuple[float, float]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            by_addr[row["address"]] = row["attack"]
            spans[row["attack"]] = (float(row["start"]), float(row["end"]))
    return by_addr, spans


def cmd_label(args: argparse.Namespace) -> None:
    by_addr, spans = read_phases(args.phases)
    cmd = ["tshark", "-n", "-r", args.pcap, "-T", "fields", "-E", "separator=,"]
    cmd += ["-e", "frame.number", "-e", "frame.time_epoch", "-e", "ip.src", "-e", "ip.dst"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"tshark failed on {args.pcap}: {proc.stderr.strip()}")
    counts: Counter[str] = Counter()
    outside: Counter[str] = Counter()
    frames = 0
    with open(args.out, "w", newline="") as handle:
        out = csv.writer(handle, lineterminator="\n")
        out.writerow(["frame", "label", "attack"])
        for line in proc.stdout.splitlines():
            frame, ts, src, dst = ([*line.split(","), "", "", ""])[:4]
            frames += 1
            if int(frame) != frames:
                sys.exit(f"tshark skipped a frame: expected {frames}, got {frame}")
            attack = by_addr.get(src) or by_addr.get(dst) or ""
            out.writerow([frame, 1 if attack else 0, attack])
            counts[attack or "benign"] += 1
            if attack:
                start, end = spans[attack]
                if not start - 1.0 <= float(ts) <= end + args.slack:
                    outside[attack] += 1
    summary = ", ".join(f"{name} {n:,}" for name, n in sorted(counts.items()))
    print(f"labels: {frames:,} frames: {summary}")
    missing = sorted(set(by_addr.values()) - set(counts))
    if missing:
        print(f"warning: no packets of {', '.join(missing)} in the capture", file=sys.stderr)
    for name, n in sorted(outside.items()):
        print(f"note: {n:,} {name} packets fall outside its phase (+{args.slack:g} s)", file=sys.stderr)


# ----------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("site", help="write the pages the HTTP server serves")
    p.add_argument("dir")
    p.set_defaults(fn=cmd_site)

    p = sub.add_parser("servers", help="DNS-like UDP responder and SSH-like TCP server")
    p.add_argument("--addr", default="127.0.0.2")
    p.add_argument("--udp-port", type=int, default=5353)
    p.add_argument("--ssh-port", type=int, default=2222)
    p.set_defaults(fn=cmd_servers)

    p = sub.add_parser("wait", help="wait until TCP ports accept connections")
    p.add_argument("--addr", default="127.0.0.2")
    p.add_argument("--tcp", type=int, nargs="+", required=True)
    p.add_argument("--timeout", type=float, default=15.0)
    p.set_defaults(fn=cmd_wait)

    p = sub.add_parser("benign", help="benign clients, each from its own source address")
    p.add_argument("--server", default="127.0.0.2")
    p.add_argument("--http-port", type=int, default=8081)
    p.add_argument("--udp-port", type=int, default=5353)
    p.add_argument("--ssh-port", type=int, default=2222)
    p.add_argument("--redis", default="127.0.0.1:6379")
    p.add_argument("--redis-db", type=int, default=11, help="the Redis database the Redis clients use")
    p.add_argument("--http-src", nargs="*", default=[])
    p.add_argument("--redis-src", nargs="*", default=[])
    p.add_argument("--dns-src", nargs="*", default=[])
    p.add_argument("--ssh-src", nargs="*", default=[])
    p.add_argument("--seconds", type=float, default=0.0, help="0: until interrupted")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(fn=cmd_benign)

    p = sub.add_parser("http-flood", help="HTTP GET flood from one source address")
    p.add_argument("--src", required=True)
    p.add_argument("--host", default="127.0.0.2")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--rate", type=float, default=300.0, help="requests per second at most")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--seconds", type=float, default=5.0)
    p.set_defaults(fn=cmd_http_flood)

    p = sub.add_parser("brute-force", help="short logins to the SSH-like server from one address")
    p.add_argument("--src", required=True)
    p.add_argument("--host", default="127.0.0.2")
    p.add_argument("--port", type=int, default=2222)
    p.add_argument("--rate", type=float, default=30.0, help="attempts per second at most")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--seconds", type=float, default=5.0)
    p.set_defaults(fn=cmd_brute_force)

    p = sub.add_parser("slowloris", help="HTTP connections held open with partial requests")
    p.add_argument("--src", required=True)
    p.add_argument("--host", default="127.0.0.2")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--connections", type=int, default=300)
    p.add_argument("--open-rate", type=float, default=150.0, help="new connections per second")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between header lines")
    p.add_argument("--seconds", type=float, default=10.0)
    p.set_defaults(fn=cmd_slowloris)

    p = sub.add_parser("discard", help="a TCP listener that reads and discards")
    p.add_argument("--addr", default="127.0.0.2")
    p.add_argument("--port", type=int, default=40404)
    p.add_argument("--seconds", type=float, default=0.0, help="0: until interrupted")
    p.set_defaults(fn=cmd_discard)

    p = sub.add_parser("bulk", help="one large transfer to a discard listener")
    p.add_argument("--src", required=True)
    p.add_argument("--host", default="127.0.0.2")
    p.add_argument("--port", type=int, default=40404)
    p.add_argument("--megabytes", type=float, default=64.0)
    p.add_argument("--seconds", type=float, default=4.0)
    p.set_defaults(fn=cmd_bulk)

    p = sub.add_parser("label", help="write labels.csv for a capture from the attack phases")
    p.add_argument("--pcap", required=True)
    p.add_argument("--phases", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--slack", type=float, default=10.0, help="seconds after a phase still expected")
    p.set_defaults(fn=cmd_label)

    args = parser.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()

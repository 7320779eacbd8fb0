"""A simulated office network that produces packet records, for demos, tests and benchmarks.

``DemoTraffic`` generates ``RECORD_DTYPE`` arrays as a sensor on the LAN edge of 10.0.0.0/24
would see them: internal hosts browsing the web (TCP handshakes, requests, responses of varied
sizes, teardown), DNS and NTP over UDP, interactive SSH, ping, ARP, inbound HTTP to a public web
server, and, with ``attack_prob > 0``, injected attacks whose packets carry their
``ATTACK_LABELS`` code in the ``label`` column (port scans, SYN floods, UDP floods, HTTP floods).

Generation is vectorised per simulated second: each kind of session is drawn for the whole
second at once and expanded into packets with NumPy, packets that fall after the second are kept
pending, so the output is a single time-ordered stream. The stream depends only on the seed and
the constructor arguments, never on how it is sliced into ``records(n)`` calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from capture.records import ATTACK_LABELS, RECORD_DTYPE

ATTACK_CODES = {name: code for code, name in ATTACK_LABELS.items() if code}

# Frame overheads on the wire: Ethernet 14 + IPv4 20 + transport header.
_HDR_SYN = 14 + 20 + 40  # TCP SYN with MSS/SACK/timestamp/window-scale options
_HDR_TCP = 14 + 20 + 32  # TCP with the timestamp option
_HDR_UDP = 14 + 20 + 8
_HDR_ICMP = 14 + 20 + 8
_MSS = 1448

_FIN, _SYN, _RST, _PSH, _ACK = 1, 2, 4, 8, 16

_NET = 10 << 24  # 10.0.0.0
_GATEWAY = _NET | 1
_DNS_SERVER = _NET | 2
_WEB_SERVER = _NET | 3
_SSH_SERVER = _NET | 4
_ROUTER_MAC = 0x02_00_00_00_00_01
_BROADCAST_MAC = 0xFF_FF_FF_FF_FF_FF
_HOST_MAC_BASE = 0x02_00_00_00_00_00

# First octets that give plausible public addresses (no RFC 1918, loopback or multicast).
_PUBLIC_FIRST_OCTETS = np.array([8, 13, 20, 23, 34, 35, 52, 54, 64, 93, 104, 142, 151, 157, 185, 199, 216])

_COLUMNS = (
    ("ts", np.float64),
    ("src", np.uint32),
    ("dst", np.uint32),
    ("sport", np.uint16),
    ("dport", np.uint16),
    ("proto", np.uint8),
    ("flags", np.uint16),
    ("payload", np.uint32),
    ("hdr", np.uint32),
    ("ttl", np.uint8),
    ("eth", np.uint16),
    ("label", np.uint8),
    ("smac", np.uint64),
    ("dmac", np.uint64),
)


class _Packets:
    """Column lists collected while building one simulated second; scalars broadcast."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {name: [] for name, _ in _COLUMNS}

    def add(self, ts: np.ndarray, **cols: object) -> None:
        n = len(ts)
        if n == 0:
            return
        cols["ts"] = ts
        cols.setdefault("eth", 0x0800)
        cols.setdefault("label", 0)
        for name, dtype in _COLUMNS:
            if name in ("smac", "dmac"):
                continue
            value = cols.get(name, 0)
            self.parts[name].append(np.broadcast_to(np.asarray(value).astype(dtype, copy=False), (n,)))
        for name in ("smac", "dmac"):
            if name in cols:
                self.parts[name].append(np.broadcast_to(np.asarray(cols[name], dtype=np.uint64), (n,)))
            else:
                ip = cols["src" if name == "smac" else "dst"]
                self.parts[name].append(np.broadcast_to(_mac_for(np.asarray(ip, dtype=np.uint32)), (n,)))

    def concat(self) -> dict[str, np.ndarray]:
        return {
            name: (np.concatenate(self.parts[name]) if self.parts[name] else np.zeros(0, dtype))
            for name, dtype in _COLUMNS
        }


def _mac_for(ip: np.ndarray) -> np.ndarray:
    """Hosts on the LAN have their own MAC; everything else is reached through the router."""
    internal = (ip >> 8) == (_NET >> 8)
    return np.where(internal, _HOST_MAC_BASE + (ip & 0xFF).astype(np.uint64), _ROUTER_MAC).astype(np.uint64)


def _segment_index(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sessions with ``counts`` packets: (session index, position within session) per packet."""
    total = int(counts.sum())
    session = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    return session, np.arange(total) - starts[session]


# Packets/s of `manage.py capture --demo` without --rate. Live demo traffic is the simulated
# timeline stretched to this rate (DemoTraffic.stream), so a model for demo mode must learn that
# timing too (detection.services.records_from_demo).
DEMO_RATE = 200.0


class DemoTraffic:
    """A deterministic simulated network: same seed and arguments, same packets.

    ``pps`` is the mean benign packet rate of the simulated network (attacks come on top).
    ``attack_prob`` is the probability that an attack starts in any simulated second
    (0 gives pure benign traffic for training); ``attacks`` restricts the kinds injected
    (names from ``ATTACK_LABELS``); ``attack_scale`` multiplies attack rates and sizes.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        hosts: int = 20,
        pps: float = 2000.0,
        attack_prob: float = 0.0,
        attacks: Sequence[str] | None = None,
        attack_scale: float = 1.0,
        start_ts: float = 1_700_000_000.0,
    ) -> None:
        if not 1 <= hosts <= 200:
            raise ValueError("hosts must be between 1 and 200")
        kinds = tuple(attacks) if attacks is not None else tuple(ATTACK_CODES)
        unknown = [k for k in kinds if k not in ATTACK_CODES]
        if unknown:
            raise ValueError(f"unknown attack kinds {unknown}; known: {sorted(ATTACK_CODES)}")
        if not kinds and attack_prob > 0:
            raise ValueError("attack_prob > 0 needs at least one attack kind")
        self.seed = seed
        self.pps = float(pps)
        self.attack_prob = float(attack_prob)
        self.attack_kinds = kinds
        self.attack_scale = float(attack_scale)
        self.start_ts = float(start_ts)
        self._rng = np.random.default_rng(seed)
        rng = self._rng
        self._hosts = (_NET | (10 + np.arange(hosts))).astype(np.uint32)
        # Some hosts are much busier than others.
        activity = rng.lognormal(0.0, 0.8, hosts)
        self._host_p = activity / activity.sum()
        # Windows hosts start at TTL 128, Linux/macOS at 64.
        self._host_ttl = np.where(rng.random(hosts) < 0.4, 128, 64).astype(np.uint8)
        self._servers = self._public_ips(400)
        ranks = np.arange(1, len(self._servers) + 1)
        self._server_p = (1.0 / ranks**1.1) / (1.0 / ranks**1.1).sum()
        self._server_ttl = (rng.choice([64, 128, 255], len(self._servers)) - rng.integers(6, 24, 400)).astype(
            np.uint8
        )
        self._clients = self._public_ips(3000)  # outside visitors of the public web server
        # Mean packets per session, measured once on long runs, to turn pps into session rates.
        share = {
            "web": 0.62,
            "dns": 0.07,
            "ssh": 0.12,
            "inbound": 0.12,
            "ping": 0.03,
            "ntp": 0.02,
            "arp": 0.02,
        }
        mean_pkts = {
            "web": 37.0,
            "dns": 2.0,
            "ssh": 190.0,
            "inbound": 20.0,
            "ping": 6.0,
            "ntp": 2.0,
            "arp": 2.0,
        }
        self._session_rate = {k: self.pps * share[k] / mean_pkts[k] for k in share}
        self._window = 1.0
        self._sim_t = self.start_ts
        self._pending: dict[str, np.ndarray] | None = None
        self._ready: list[dict[str, np.ndarray]] = []
        self._ready_len = 0
        self._forced: list[tuple[str, float | None]] = []
        self._next_seq = 0

    # ----------------------------------------------------------------------------- public API

    def records(self, n: int, first_seq: int | None = None) -> np.ndarray:
        """The next ``n`` packets of the stream; ``seq`` counts on from ``first_seq`` (default: gap-free)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        while self._ready_len < n:
            self._simulate_window()
        cols = self._take(n)
        out = self._to_records(cols)
        seq0 = self._next_seq if first_seq is None else int(first_seq)
        out["seq"] = np.arange(seq0, seq0 + n, dtype=np.uint64)
        self._next_seq = seq0 + n
        return out

    def inject(self, kind: str, at: float | None = None) -> None:
        """Force one attack of ``kind`` at simulated time ``at`` (default: the next simulated second)."""
        if kind not in ATTACK_CODES:
            raise ValueError(f"unknown attack kind {kind!r}; known: {sorted(ATTACK_CODES)}")
        self._forced.append((kind, at))

    def stream(
        self,
        rate_pps: float,
        batch_size: int = 1000,
        *,
        first_seq: int = 0,
        max_delay: float = 0.5,
        pace: bool = True,
        start: float | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Iterator[tuple[np.ndarray, float]]:
        """Endless live batches at about ``rate_pps`` packets/s with the simulated timing.

        The simulated timeline is stretched by ``pps / rate_pps`` and moved to the wall clock, so
        ``ts`` are real arrival times. A batch closes at ``batch_size`` packets or when it spans
        ``max_delay`` seconds. Yields ``(records, due)`` where ``due`` is the wall time of the last
        packet; with ``pace`` the generator sleeps until then, so a consumer can publish at once.
        """
        if rate_pps <= 0 or batch_size <= 0:
            raise ValueError("rate_pps and batch_size must be positive")
        factor = self.pps / rate_pps
        t0 = clock() if start is None else start
        sim0: float | None = None
        seq = first_seq
        while True:
            chunk = self.records(batch_size, first_seq=seq)
            seq += len(chunk)
            if sim0 is None:
                sim0 = float(chunk["ts"][0])
            chunk["ts"] = t0 + (chunk["ts"] - sim0) * factor
            ts = chunk["ts"]
            begin = 0
            while begin < len(chunk):
                # Cut where the batch would span more than max_delay.
                end = int(np.searchsorted(ts, ts[begin] + max_delay, side="right"))
                end = max(end, begin + 1)
                batch = chunk[begin:end]
                due = float(batch["ts"][-1])
                if pace:
                    wait = due - clock()
                    if wait > 0:
                        sleep(wait)
                yield batch, due
                begin = end

    # ------------------------------------------------------------------------ stream plumbing

    def _take(self, n: int) -> dict[str, np.ndarray]:
        merged = {name: np.concatenate([p[name] for p in self._ready]) for name, _ in _COLUMNS}
        out = {k: v[:n] for k, v in merged.items()}
        rest = {k: v[n:] for k, v in merged.items()}
        self._ready = [rest]
        self._ready_len = len(rest["ts"])
        return out

    def _simulate_window(self) -> None:
        t0 = self._sim_t
        t1 = t0 + self._window
        pk = _Packets()
        self._benign(pk, t0, t1)
        self._attacks(pk, t0, t1)
        new = pk.concat()
        if self._pending is not None:
            new = {k: np.concatenate([self._pending[k], new[k]]) for k in new}
        order = np.argsort(new["ts"], kind="stable")
        new = {k: v[order] for k, v in new.items()}
        cut = int(np.searchsorted(new["ts"], t1, side="left"))
        self._ready.append({k: v[:cut] for k, v in new.items()})
        self._ready_len += cut
        self._pending = {k: v[cut:] for k, v in new.items()}
        self._sim_t = t1

    @staticmethod
    def _to_records(c: dict[str, np.ndarray]) -> np.ndarray:
        n = len(c["ts"])
        rec = np.zeros(n, dtype=RECORD_DTYPE)
        rec["ts"] = c["ts"]
        is_ip = c["eth"] == 0x0800
        length = c["hdr"] + c["payload"]
        length = np.where(length < 60, 60, length)  # Ethernet minimum frame (without FCS)
        rec["length"] = length
        rec["caplen"] = length
        rec["eth_type"] = c["eth"]
        rec["src_mac"] = c["smac"]
        rec["dst_mac"] = c["dmac"]
        rec["ip_version"] = np.where(is_ip, 4, 0)
        rec["proto"] = np.where(is_ip, c["proto"], 0)
        for col, name in (("src", "src_ip"), ("dst", "dst_ip")):
            raw = c[col].astype(">u4").view(np.uint8).reshape(n, 4)
            rec[name][:, 10] = np.where(is_ip, 0xFF, 0)
            rec[name][:, 11] = np.where(is_ip, 0xFF, 0)
            rec[name][:, 12:] = np.where(is_ip[:, None], raw, 0)
        rec["sport"] = c["sport"]
        rec["dport"] = c["dport"]
        rec["tcp_flags"] = c["flags"]
        rec["ttl"] = c["ttl"]
        rec["payload_len"] = c["payload"]
        rec["label"] = c["label"]
        return rec

    # ----------------------------------------------------------------------------- helpers

    def _public_ips(self, n: int) -> np.ndarray:
        rng = self._rng
        first = rng.choice(_PUBLIC_FIRST_OCTETS, n).astype(np.uint32)
        rest = rng.integers(0, 1 << 24, n, dtype=np.uint32)
        return (first << 24) | rest

    def _starts(self, rate: float, t0: float, t1: float) -> np.ndarray:
        k = self._rng.poisson(rate * (t1 - t0))
        return np.sort(self._rng.uniform(t0, t1, k))

    def _pick_hosts(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self._rng.choice(len(self._hosts), k, p=self._host_p)
        return self._hosts[idx], self._host_ttl[idx]

    def _ephemeral(self, k: int) -> np.ndarray:
        return self._rng.integers(32768, 61000, k).astype(np.uint16)

    # ------------------------------------------------------------------------ session kinds

    def _tcp_sessions(
        self,
        pk: _Packets,
        t0: np.ndarray,
        cli: np.ndarray,
        srv: np.ndarray,
        cport: np.ndarray,
        sport: np.ndarray | int,
        rtt: np.ndarray,
        req: np.ndarray,
        resp: np.ndarray,
        bw: np.ndarray,
        idle: np.ndarray,
        ttl_c: np.ndarray | int,
        ttl_s: np.ndarray | int,
        label: int = 0,
    ) -> None:
        """Handshake, one request, a response in MSS segments with an ACK every two, FIN teardown."""
        k = len(t0)
        if k == 0:
            return
        rng = self._rng
        sport = np.broadcast_to(np.asarray(sport, dtype=np.uint16), (k,))
        ttl_c = np.broadcast_to(np.asarray(ttl_c, dtype=np.uint8), (k,))
        ttl_s = np.broadcast_to(np.asarray(ttl_s, dtype=np.uint8), (k,))
        segs = np.maximum(1, -(-resp // _MSS))
        data_pkts = segs + segs // 2
        counts = 7 + data_pkts
        s, pos = _segment_index(counts)
        n = len(s)
        lan = 0.0002 * (1 + rng.random(n))  # host-side turnaround seen at the sensor
        think = rng.exponential(0.02, k)
        seg_time = _MSS * 8 / bw
        t_req = t0 + rtt + 0.0004
        t_data = t_req + rtt + think
        last_data = t_data + (segs - 1) * seg_time
        q = pos - 4
        seg = q - (q + 1) // 3
        in_data = (pos >= 4) & (pos < 4 + data_pkts[s])
        is_ack_in_data = in_data & (q % 3 == 2)
        fin_pos = pos - 4 - data_pkts[s]
        ts = np.select(
            [pos == 0, pos == 1, pos == 2, pos == 3, in_data, fin_pos == 0, fin_pos == 1],
            [
                t0[s],
                t0[s] + rtt[s],
                t0[s] + rtt[s] + lan,
                t_req[s],
                t_data[s] + seg * seg_time[s] + np.where(is_ack_in_data, lan, 0.0),
                last_data[s] + idle[s],
                last_data[s] + idle[s] + rtt[s],
            ],
            last_data[s] + idle[s] + rtt[s] + lan,
        )
        from_server = (pos == 1) | (in_data & ~is_ack_in_data) | (fin_pos == 1)
        last_seg = in_data & ~is_ack_in_data & (seg == segs[s] - 1)
        data_len = np.where(last_seg, resp[s] - (segs[s] - 1) * _MSS, _MSS)
        payload = np.select(
            [pos == 3, in_data & ~is_ack_in_data],
            [req[s], np.maximum(data_len, 0)],
            0,
        )
        flags = np.select(
            [pos == 0, pos == 1, pos == 3, last_seg, fin_pos == 0, fin_pos == 1],
            [_SYN, _SYN | _ACK, _PSH | _ACK, _PSH | _ACK, _FIN | _ACK, _FIN | _ACK],
            _ACK,
        )
        hdr = np.where(pos <= 1, _HDR_SYN, _HDR_TCP)
        a, b = cli[s], srv[s]
        pa, pb = cport[s], sport[s]
        pk.add(
            ts,
            src=np.where(from_server, b, a),
            dst=np.where(from_server, a, b),
            sport=np.where(from_server, pb, pa),
            dport=np.where(from_server, pa, pb),
            proto=6,
            flags=flags,
            payload=payload,
            hdr=hdr,
            ttl=np.where(from_server, ttl_s[s], ttl_c[s]),
            label=label,
        )

    def _web(self, pk: _Packets, t0: float, t1: float) -> None:
        rng = self._rng
        start = self._starts(self._session_rate["web"], t0, t1)
        k = len(start)
        if not k:
            return
        cli, ttl_c = self._pick_hosts(k)
        # A few sessions go to the intranet web server, the rest to the internet.
        srv_idx = rng.choice(len(self._servers), k, p=self._server_p)
        intranet = rng.random(k) < 0.08
        srv = np.where(intranet, _WEB_SERVER, self._servers[srv_idx]).astype(np.uint32)
        ttl_s = np.where(intranet, 64, self._server_ttl[srv_idx])
        port = np.where(rng.random(k) < 0.8, 443, 80)
        rtt = np.where(intranet, rng.uniform(0.0003, 0.002, k), rng.lognormal(np.log(0.03), 0.6, k))
        req = rng.integers(180, 900, k)
        resp = np.minimum(rng.lognormal(np.log(9000), 1.6, k), 5e6).astype(np.int64)
        bw = rng.lognormal(np.log(20e6), 0.8, k)
        idle = rng.exponential(1.5, k)
        self._tcp_sessions(
            pk, start, cli, srv, self._ephemeral(k), port, rtt, req, resp, bw, idle, ttl_c, ttl_s
        )

    def _inbound(self, pk: _Packets, t0: float, t1: float) -> None:
        rng = self._rng
        start = self._starts(self._session_rate["inbound"], t0, t1)
        k = len(start)
        if not k:
            return
        # Visitors of the public web server: few return often, most come once.
        ranks = rng.zipf(1.3, k) % len(self._clients)
        cli = self._clients[ranks]
        ttl_c = (rng.choice([64, 128], k) - rng.integers(5, 25, k)).astype(np.uint8)
        rtt = rng.lognormal(np.log(0.05), 0.5, k)
        req = rng.integers(200, 700, k)
        resp = np.minimum(rng.lognormal(np.log(6000), 1.2, k), 2e6).astype(np.int64)
        bw = rng.lognormal(np.log(5e6), 0.7, k)
        idle = rng.exponential(0.5, k)
        port = np.where(rng.random(k) < 0.7, 443, 80)
        self._tcp_sessions(
            pk,
            start,
            cli,
            np.full(k, _WEB_SERVER, np.uint32),
            self._ephemeral(k),
            port,
            rtt,
            req,
            resp,
            bw,
            idle,
            ttl_c,
            64,
        )

    def _ssh(self, pk: _Packets, t0: float, t1: float) -> None:
        rng = self._rng
        start = self._starts(self._session_rate["ssh"], t0, t1)
        k = len(start)
        if not k:
            return
        cli, ttl_c = self._pick_hosts(k)
        external = rng.random(k) < 0.3
        srv = np.where(external, self._servers[rng.integers(0, 50, k)], _SSH_SERVER).astype(np.uint32)
        ttl_s = np.where(external, 52, 64)
        rtt = np.where(external, rng.lognormal(np.log(0.04), 0.4, k), rng.uniform(0.0003, 0.001, k))
        keys = rng.integers(10, 120, k)
        # Per keystroke: client data, server echo, client ACK; plus handshake (3) and teardown (3).
        counts = 6 + 3 * keys
        s, pos = _segment_index(counts)
        n = len(s)
        role = (pos - 3) % 3
        in_keys = (pos >= 3) & (pos < 3 + 3 * keys[s])
        # Typing: short gaps with occasional pauses to read output.
        gaps = rng.exponential(0.18, n) + np.where(rng.random(n) < 0.05, rng.exponential(3.0, n), 0.0)
        gaps = np.where(in_keys & (role == 0), gaps, 0.0)
        elapsed = np.cumsum(gaps)
        first = np.cumsum(counts) - counts
        elapsed = elapsed - (elapsed[first] - gaps[first])[s]
        end_time = elapsed[np.cumsum(counts) - 1]
        lan = 0.0002 * (1 + rng.random(n))
        base = start[s] + rtt[s] * 1.5
        ts = np.select(
            [
                pos == 0,
                pos == 1,
                pos == 2,
                in_keys & (role == 0),
                in_keys & (role == 1),
                in_keys & (role == 2),
            ],
            [
                start[s],
                start[s] + rtt[s],
                start[s] + rtt[s] + lan,
                base + elapsed,
                base + elapsed + rtt[s] + 0.001,
                base + elapsed + rtt[s] + 0.001 + lan,
            ],
            base + end_time[s] + 0.5 + (pos - 3 - 3 * keys[s]) * (rtt[s] + lan),
        )
        tail = pos - 3 - 3 * keys[s]
        from_server = (pos == 1) | (in_keys & (role == 1)) | (tail == 1)
        big_output = rng.random(n) < 0.04
        payload = np.select(
            [in_keys & (role == 0), in_keys & (role == 1)],
            [
                np.full(n, 36),
                np.where(big_output, rng.integers(200, 1400, n), 36 + 16 * rng.integers(0, 3, n)),
            ],
            0,
        )
        flags = np.select(
            [pos == 0, pos == 1, in_keys & (role < 2), (tail == 0) | (tail == 1)],
            [_SYN, _SYN | _ACK, _PSH | _ACK, _FIN | _ACK],
            _ACK,
        )
        cport = self._ephemeral(k)
        pk.add(
            ts,
            src=np.where(from_server, srv[s], cli[s]),
            dst=np.where(from_server, cli[s], srv[s]),
            sport=np.where(from_server, 22, cport[s]),
            dport=np.where(from_server, cport[s], 22),
            proto=6,
            flags=flags,
            payload=payload,
            hdr=np.where(pos <= 1, _HDR_SYN, _HDR_TCP),
            ttl=np.where(from_server, ttl_s[s], ttl_c[s]),
        )

    def _udp_pairs(
        self, pk: _Packets, kind: str, port: int, t0: float, t1: float, q_size: tuple, r_size: tuple
    ) -> None:
        rng = self._rng
        start = self._starts(self._session_rate[kind], t0, t1)
        k = len(start)
        if not k:
            return
        cli, ttl_c = self._pick_hosts(k)
        if kind == "dns":
            outside = rng.random(k) < 0.1
            srv = np.where(outside, np.uint32((1 << 24) | (1 << 16) | (1 << 8) | 1), _DNS_SERVER)
            rtt = np.where(outside, rng.lognormal(np.log(0.02), 0.4, k), rng.uniform(0.0005, 0.04, k))
        else:
            outside = np.ones(k, bool)
            srv = self._servers[rng.integers(0, 8, k)]
            rtt = rng.lognormal(np.log(0.03), 0.4, k)
        srv = srv.astype(np.uint32)
        cport = self._ephemeral(k) if kind == "dns" else np.full(k, port, np.uint16)
        ts = np.concatenate([start, start + rtt])
        both = np.concatenate
        pk.add(
            ts,
            src=both([cli, srv]),
            dst=both([srv, cli]),
            sport=both([cport, np.full(k, port, np.uint16)]),
            dport=both([np.full(k, port, np.uint16), cport]),
            proto=17,
            payload=both([rng.integers(*q_size, k), rng.integers(*r_size, k)]),
            hdr=_HDR_UDP,
            ttl=both([ttl_c, np.where(outside, 57, 64).astype(np.uint8)]),
        )

    def _ping(self, pk: _Packets, t0: float, t1: float) -> None:
        rng = self._rng
        start = self._starts(self._session_rate["ping"], t0, t1)
        k = len(start)
        if not k:
            return
        cli, ttl_c = self._pick_hosts(k)
        to_gw = rng.random(k) < 0.4
        dst = np.where(to_gw, _GATEWAY, self._servers[rng.integers(0, 30, k)]).astype(np.uint32)
        rtt = np.where(to_gw, rng.uniform(0.0003, 0.001, k), rng.lognormal(np.log(0.025), 0.3, k))
        pings = rng.integers(1, 6, k)
        s, pos = _segment_index(2 * pings)
        echo = pos // 2
        reply = (pos % 2) == 1
        ts = start[s] + echo * 1.0 + np.where(reply, rtt[s], 0.0)
        pk.add(
            ts,
            src=np.where(reply, dst[s], cli[s]),
            dst=np.where(reply, cli[s], dst[s]),
            sport=np.where(reply, 0, 8),  # ICMP type: echo reply 0, echo request 8
            dport=0,
            proto=1,
            payload=56,
            hdr=_HDR_ICMP,
            ttl=np.where(reply, np.where(to_gw[s], 64, 118), ttl_c[s]),
        )

    def _arp(self, pk: _Packets, t0: float, t1: float) -> None:
        start = self._starts(self._session_rate["arp"], t0, t1)
        k = len(start)
        if not k:
            return
        cli, _ = self._pick_hosts(k)
        ts = np.concatenate([start, start + self._rng.uniform(0.0001, 0.002, k)])
        who = np.concatenate([_mac_for(cli), np.full(k, _ROUTER_MAC, np.uint64)])
        to = np.concatenate([np.full(k, _BROADCAST_MAC, np.uint64), _mac_for(cli)])
        pk.add(ts, src=0, dst=0, eth=0x0806, proto=0, payload=0, hdr=42, ttl=0, smac=who, dmac=to)

    def _benign(self, pk: _Packets, t0: float, t1: float) -> None:
        self._web(pk, t0, t1)
        self._inbound(pk, t0, t1)
        self._ssh(pk, t0, t1)
        self._udp_pairs(pk, "dns", 53, t0, t1, (28, 60), (44, 300))
        self._udp_pairs(pk, "ntp", 123, t0, t1, (48, 49), (48, 49))
        self._ping(pk, t0, t1)
        self._arp(pk, t0, t1)

    # ------------------------------------------------------------------------------ attacks

    def _attacks(self, pk: _Packets, t0: float, t1: float) -> None:
        rng = self._rng
        planned: list[tuple[str, float]] = []
        if self.attack_prob > 0:
            for t in self._starts(self.attack_prob, t0, t1):
                planned.append((self.attack_kinds[rng.integers(len(self.attack_kinds))], float(t)))
        keep = []
        for kind, at in self._forced:
            if at is None or at < t1:
                planned.append((kind, max(t0, at) if at is not None else t0 + 0.5 * (t1 - t0)))
            else:
                keep.append((kind, at))
        self._forced = keep
        for kind, t in planned:
            getattr(self, f"_attack_{kind}")(pk, t)

    def _attacker(self, internal_prob: float) -> np.uint32:
        rng = self._rng
        if rng.random() < internal_prob:
            # A rogue device on the LAN (10.0.0.200-249) that sends nothing benign, so labels stay
            # per host: a compromised workstation would also make its normal traffic look odd.
            return np.uint32(_NET | int(rng.integers(200, 250)))
        return self._public_ips(1)[0]

    def _flood_times(
        self, t: float, duration: tuple[float, float], rate: tuple[float, float], sources: int = 1
    ) -> np.ndarray:
        """Sorted send times of a flood from ``t``: random duration, random per-source rate (scaled)."""
        rng = self._rng
        dur = rng.uniform(*duration)
        per_source = rng.uniform(*rate) * self.attack_scale
        return np.sort(t + rng.uniform(0, dur, int(dur * (per_source * sources))))

    def _answered(self, ts: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
        """The victim answers about ``share`` of a flood, 0.2 ms later: (indices answered, their times)."""
        a = np.flatnonzero(self._rng.random(len(ts)) < share)
        return a, ts[a] + 0.0002

    def _attack_port_scan(self, pk: _Packets, t: float) -> None:
        rng = self._rng
        code = ATTACK_CODES["port_scan"]
        attacker = self._attacker(0.4)
        target = rng.choice(np.concatenate([self._hosts, [_WEB_SERVER, _SSH_SERVER, _DNS_SERVER]]))
        n = int(rng.integers(200, 1500) * self.attack_scale)
        rate = rng.uniform(150, 2000) * self.attack_scale
        # Popular ports first, as nmap does, then random ones.
        ports = np.concatenate([rng.permutation(1024) + 1, rng.integers(1025, 65536, n)])[:n].astype(
            np.uint16
        )
        ts = t + np.arange(n) / rate + rng.uniform(0, 0.2 / rate, n)
        fixed = rng.random() < 0.6  # nmap SYN scan keeps one source port; connect scans do not
        sport = np.full(n, rng.integers(32768, 61000), np.uint16) if fixed else self._ephemeral(n)
        is_open = np.isin(ports, [22, 80, 443, 53]) & (target in (_WEB_SERVER, _SSH_SERVER, _DNS_SERVER))
        rtt = 0.0004 if (attacker >> 8) == (_NET >> 8) else rng.lognormal(np.log(0.04), 0.3)
        ttl_a = 64 if (attacker >> 8) == (_NET >> 8) else int(rng.integers(40, 60))
        probe = {
            "src": attacker,
            "dst": target,
            "sport": sport,
            "dport": ports,
            "proto": 6,
            "hdr": _HDR_TCP,
            "label": code,
        }
        pk.add(ts, **probe, flags=_SYN, payload=0, ttl=ttl_a)
        pk.add(
            ts + rtt,
            src=target,
            dst=attacker,
            sport=ports,
            dport=sport,
            proto=6,
            hdr=_HDR_TCP,
            label=code,
            flags=np.where(is_open, _SYN | _ACK, _RST | _ACK),
            payload=0,
            ttl=64,
        )
        o = np.flatnonzero(is_open)
        pk.add(
            ts[o] + 2 * rtt,
            **{**probe, "sport": sport[o], "dport": ports[o]},
            flags=_RST,
            payload=0,
            ttl=ttl_a,
        )

    def _attack_syn_flood(self, pk: _Packets, t: float) -> None:
        rng = self._rng
        code = ATTACK_CODES["syn_flood"]
        target = rng.choice([_WEB_SERVER, _SSH_SERVER, *self._hosts[:3]])
        port = 22 if target == _SSH_SERVER else int(rng.choice([80, 443]))
        ts = self._flood_times(t, (1.0, 4.0), (1500, 6000))
        n = len(ts)
        spoofed = rng.random() < 0.5  # hping3 --rand-source versus a single flooding host
        src = self._public_ips(n) if spoofed else np.full(n, self._attacker(0.2), np.uint32)
        sport = self._ephemeral(n)
        ttl = rng.integers(30, 255, n).astype(np.uint8) if spoofed else np.uint8(rng.integers(40, 65))
        pk.add(
            ts,
            src=src,
            dst=target,
            sport=sport,
            dport=port,
            proto=6,
            flags=_SYN,
            payload=0,
            hdr=_HDR_TCP,
            ttl=ttl,
            label=code,
        )
        # The victim answers until its backlog is full.
        a, answer_ts = self._answered(ts, 0.3)
        pk.add(
            answer_ts,
            src=target,
            dst=src[a],
            sport=port,
            dport=sport[a],
            proto=6,
            flags=_SYN | _ACK,
            payload=0,
            hdr=_HDR_SYN,
            ttl=64,
            label=code,
        )

    def _attack_udp_flood(self, pk: _Packets, t: float) -> None:
        rng = self._rng
        code = ATTACK_CODES["udp_flood"]
        target = rng.choice([_WEB_SERVER, _DNS_SERVER, *self._hosts[:5]])
        attacker = self._attacker(0.2)
        ts = self._flood_times(t, (1.0, 3.0), (2000, 8000))
        n = len(ts)
        random_ports = rng.random() < 0.5
        dport = (
            rng.integers(1, 65536, n).astype(np.uint16) if random_ports else np.uint16(rng.integers(1, 65536))
        )
        size = int(rng.choice([0, 18, 64, 512, 1024, 1400]))
        sport = np.uint16(rng.integers(1024, 65536))
        pk.add(
            ts,
            src=attacker,
            dst=target,
            sport=sport,
            dport=dport,
            proto=17,
            payload=size,
            hdr=_HDR_UDP,
            ttl=64,
            label=code,
        )
        # ICMP port unreachable, rate limited by the victim's kernel.
        _, answer_ts = self._answered(ts, 0.1)
        pk.add(
            answer_ts,
            src=target,
            dst=attacker,
            sport=3,
            dport=3,
            proto=1,
            payload=28 + min(size, 512),
            hdr=_HDR_ICMP,
            ttl=64,
            label=code,
        )

    def _attack_http_flood(self, pk: _Packets, t: float) -> None:
        rng = self._rng
        code = ATTACK_CODES["http_flood"]
        bots = self._public_ips(int(rng.integers(2, 7)))
        # 80-300 connections per second per bot
        start = self._flood_times(t, (2.0, 6.0), (80, 300), sources=len(bots))
        k = len(start)
        cli = bots[rng.integers(0, len(bots), k)]
        rtt = rng.lognormal(np.log(0.04), 0.3, k)
        req = rng.integers(90, 300, k)
        resp = rng.integers(200, 4000, k)
        self._tcp_sessions(
            pk,
            start,
            cli,
            np.full(k, _WEB_SERVER, np.uint32),
            self._ephemeral(k),
            80,
            rtt,
            req,
            resp,
            np.full(k, 10e6),
            rng.exponential(0.01, k),
            np.uint8(rng.integers(40, 60)),
            64,
            label=code,
        )

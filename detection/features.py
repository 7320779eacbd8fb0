"""Vectorised feature extraction from packet records for anomaly detection.

Three levels, each a superset of the previous one:

``low``
    per-packet header features: lengths, protocol, port classes and service ports, TCP flag bits,
    TTL, direction relative to private address space.
``standard``
    plus exact sliding-window statistics (window ``WINDOW`` seconds) per client host, service,
    directed host pair and bidirectional flow: packet and byte rates, size and inter-arrival
    mean/std, distinct ports / servers / client ports, SYNs per ACK, RSTs; and, not windowed, the
    TCP connections the client holds open to the service (``_open_connections``).
``advanced``
    plus damped incremental statistics at several time scales (decay ``DECAYS`` per second) per
    client host, service, host pair and socket, in the spirit of Kitsune's AfterImage (Mirsky et
    al., NDSS 2018): decayed packet weight, size mean/std, the pair's two directions combined
    (magnitude, radius, share of the other direction) and inter-arrival jitter.

Host-level statistics follow the conversation, not the packet's direction: a packet's "client"
statistics are those of the host that started its conversation (``client_side``), over both
directions of all that host's conversations, and its "service" statistics those of the server
end's (host, port, protocol). Keyed by the packet's source instead, a server being scanned sends
thousands of resets from thousands of ports, and its replies to every other client carry those
figures: benign traffic to a busy or attacked server looked like the attack. Keyed this way, the
RSTs of a scan count against the scanner, and a flood against one service leaves the host's
other services alone.

Statistics carry across calls in a ``FeatureState`` (one per sensor) that serialises to bytes.
Feeding a stream in batches of any size gives the same features as feeding it at once: windows
keep a tail of the last ``WINDOW`` seconds of packets, and the damped statistics are computed per
key with an exact parallel scan of the recurrence ``s_i = decay_i * s_{i-1} + x_i`` (only products
of decays <= 1 and sums of non-negative terms, so no overflow or cancellation at any time span).
Keys idle for more than ``IDLE_RESET`` seconds (per key kind) start afresh, which is what makes evicting them
invisible; the key caps (``max_keys``, ``max_tail``) only bite under extreme load.

Cold start: the state also counts, per key, the packets since the key (re)started and when it
started. A statistic is *cold* for a packet while its key has fewer than ``COLD_PACKETS`` packets
before it and started less than ``COLD_SECONDS`` ago (``key_kind`` says which key each feature
needs; per-packet header features are never cold). ``transform_cold`` returns that mask beside the
features; detection.scoring replaces cold values by the model's training medians, so a statistic
without history raises nothing and is never a reason. The mask is exact whatever the batching too.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass

import numpy as np

from capture.choices import FeatureLevel
from detection.wording import Unit, format_value

LEVELS = (FeatureLevel.LOW, FeatureLevel.STANDARD, FeatureLevel.ADVANCED)  # cheapest first
WINDOW = 2.0  # seconds, sliding window of the standard level
DECAYS = (5.0, 3.0, 1.0, 0.1, 0.01)  # per second: half-lives 0.2 s ... 100 s
# Seconds without packets after which a key's damped statistics start afresh (and the key may be
# evicted). Sockets are short-lived and numerous, so they are forgotten sooner.
IDLE_RESET = {"client": 600.0, "service": 600.0, "chan": 300.0, "sock": 60.0}
# Cold start grace per key kind: a key's statistics are cold (replaced by the model's training
# medians, never a reason) while it has fewer than COLD_PACKETS packets before the current one AND
# started less than COLD_SECONDS ago; whichever comes first warms it. A new benign host's first
# handful of packets (a DNS query, a handshake) is not judged on figures of one or two packets,
# while a flood or scan, hundreds of packets per second, is warm within milliseconds and judged.
COLD_PACKETS = {"client": 8, "service": 8, "chan": 8, "sock": 8}
COLD_SECONDS = {"client": 2.0, "service": 2.0, "chan": 2.0, "sock": 2.0}
# Whether cold statistics are replaced by the training median before training and scoring (they
# are never a reason either way: explanations leave them out).
NEUTRALISE_COLD = False
KEY_KINDS = ("client", "service", "chan", "sock")
# Seconds of silence after which a TCP connection not closed by FIN or RST no longer counts as open
# (``client_open_conns``): as long as the socket's own statistics live.
CONN_IDLE = IDLE_RESET["sock"]
# Seconds a conversation's opener is remembered after its last packet (``_Openers``): as long as a
# client's statistics live, so an SSH session idle for minutes keeps its client.
OPENER_IDLE = 600.0
STATE_VERSION = 3  # 3: key history (cold start); an older state is unusable and loads as a fresh one
_MAGIC = b"netmon-feature-state\n"  # a state saved as raw arrays (``FeatureState.to_bytes``), not an npz

_MAX_TS = 1e10  # timestamps are clipped to [0, this] (year 2286); beyond is garbage
_MAX_IAT = 3600.0
_OUT_LIMIT = 1e12  # features are clipped to +-this before float32
_SCAN_BLOCK = 64
_CHUNK = 65536

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass(frozen=True)
class FeatureSpec:
    """One feature: its name, a description for people and a sentence template for explanations.

    ``text`` is formatted with ``value`` (the feature's value already written with its ``unit`` by
    ``detection.wording.format_value``: "1.51 kB", "166 ms", "480") and the packet's ``src``,
    ``dst``, ``sport``, ``dport``, ``proto``, ``client`` (the host that started the conversation)
    and ``service`` (the server end: ``host:port/proto``, or the host); ``kind`` tells how to
    phrase "normal" ("flag": a 0/1 property; "code": a category; otherwise a magnitude). The
    sentence names what a plain number counts ("{value} distinct ports"), so the "normally ..."
    bound that follows it reads in the same units.
    """

    name: str
    description: str
    text: str
    kind: str = "value"
    unit: str = Unit.AMOUNT
    level: str = FeatureLevel.LOW


# ---------------------------------------------------------------------------------- feature specs


def _low_specs() -> list[FeatureSpec]:
    s: list[FeatureSpec] = [
        FeatureSpec("length", "frame length on the wire (bytes)", "a {value} packet", unit=Unit.BYTES),
        FeatureSpec("payload_len", "transport payload (bytes)", "a {value} payload", unit=Unit.BYTES),
        FeatureSpec(
            "header_len", "header bytes (frame minus payload)", "{value} of headers", unit=Unit.BYTES
        ),
    ]
    for name, what in (("tcp", "TCP"), ("udp", "UDP"), ("icmp", "ICMP"), ("other_ip", "another IP protocol")):
        s.append(FeatureSpec(f"proto_{name}", f"packet is {what}", f"the packet is {what}", "flag"))
    s.append(FeatureSpec("non_ip", "packet is not IP (ARP, LLDP, ...)", "the packet is not IP", "flag"))
    s.append(FeatureSpec("ipv6", "packet is IPv6", "the packet is IPv6", "flag"))
    for end in ("sport", "dport"):
        side = "source" if end == "sport" else "destination"
        for cls, rng in (("wellknown", "0-1023"), ("registered", "1024-49151"), ("ephemeral", "49152-65535")):
            s.append(
                FeatureSpec(
                    f"{end}_{cls}",
                    f"{side} port is {cls} ({rng})",
                    f"the {side} port {{{end}}} is {cls.replace('wellknown', 'well-known')} ({rng})",
                    "flag",
                )
            )
    for name, ports in (("http", "80/8080"), ("https", "443"), ("dns", "53"), ("ssh", "22"), ("ntp", "123")):
        s.append(
            FeatureSpec(f"svc_{name}", f"either port is {ports}", f"the packet uses port {ports}", "flag")
        )
    for flag in ("fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr"):
        f = flag.upper()
        s.append(FeatureSpec(f"flag_{flag}", f"TCP {f} flag set", f"the TCP {f} flag is set", "flag"))
    s.append(FeatureSpec("ttl", "IP TTL / hop limit", "TTL {value}", "code", Unit.COUNT))
    for name, a, b in (
        ("int_int", "internal", "internal"),
        ("int_ext", "internal", "external"),
        ("ext_int", "external", "internal"),
        ("ext_ext", "external", "external"),
    ):
        s.append(
            FeatureSpec(
                f"dir_{name}",
                f"direction {a} to {b} (RFC 1918/loopback = internal)",
                f"the packet goes from an {a} to an {b} address",
                "flag",
            )
        )
    s.append(
        FeatureSpec("dst_multicast", "broadcast or multicast destination", "a broadcast destination", "flag")
    )
    s.append(FeatureSpec("fragment", "IP fragment", "the packet is an IP fragment", "flag"))
    s.append(FeatureSpec("decode_error", "frame only partly decodable", "the frame is malformed", "flag"))
    s.append(FeatureSpec("icmp_error", "ICMP unreachable / time exceeded", "an ICMP error message", "flag"))
    return s


def _standard_specs(window: float) -> list[FeatureSpec]:
    w = format_value(window, Unit.SECONDS)

    def spec(name: str, desc: str, text: str, unit: str) -> FeatureSpec:
        return FeatureSpec(name, f"{desc} over the last {w}", text, "value", unit, FeatureLevel.STANDARD)

    # The sentences name what a plain number counts ("packets/s", "distinct ports"); bytes,
    # durations and shares carry their unit in {value}.
    return [
        spec("client_pkts_per_s", "packets/s of the client's conversations (both directions)",
             "{client}'s conversations carried {value} packets/s", Unit.RATE),
        spec("client_bytes_per_s", "bytes/s of the client's conversations (both directions)",
             "{client}'s conversations carried {value}", Unit.BYTE_RATE),
        spec("client_size_mean", "mean packet size of the client's conversations",
             "{client}'s conversations had packets of {value} on average", Unit.BYTES),
        spec("client_size_std", "std of packet size of the client's conversations",
             "packet sizes in {client}'s conversations varied by {value}", Unit.BYTES),
        spec("client_iat_mean", "mean gap between packets of the client's conversations",
             "{client}'s conversations had a packet every {value}", Unit.SECONDS),
        spec("client_iat_std", "std of gaps between packets of the client's conversations",
             "gaps between packets of {client}'s conversations varied by {value}", Unit.SECONDS),
        spec("client_distinct_dports", "distinct server ports the client contacted",
             f"{{client}} contacted {{value}} distinct ports in {w}", Unit.COUNT),
        spec("client_distinct_servers", "distinct server hosts the client contacted",
             f"{{client}} contacted {{value}} distinct hosts in {w}", Unit.COUNT),
        spec("client_distinct_sports", "distinct ports the client connected from",
             f"{{client}} connected from {{value}} distinct source ports in {w}", Unit.COUNT),
        spec("client_syn_share", "SYNs (without ACK) / (SYNs + ACKs) in the client's conversations",
             f"{{value}} of the SYN/ACK packets of {{client}}'s conversations in {w} were "
             "connection attempts (SYN)", Unit.SHARE),
        spec("client_rst_per_s", "RSTs/s in the client's conversations (either direction)",
             "{client}'s conversations had {value} resets (RST) per second", Unit.RATE),
        spec("service_pkts_per_s", "packets/s of the service (server host, port, protocol), both directions",
             "{service} carried {value} packets/s", Unit.RATE),
        spec("service_bytes_per_s", "bytes/s of the service, both directions",
             "{service} carried {value}", Unit.BYTE_RATE),
        spec("service_distinct_clients", "distinct client hosts of the service",
             f"{{service}} was contacted by {{value}} distinct hosts in {w}", Unit.COUNT),
        spec("service_distinct_sports", "distinct client ports (connections) of the service",
             f"{{service}} was contacted from {{value}} distinct client ports in {w}", Unit.COUNT),
        spec("service_syn_per_s", "SYNs/s received by the service",
             "{value} SYN/s to {service}", Unit.RATE),
        spec("chan_pkts_per_s", "packets/s from source to destination",
             "{src} sent {value} packets/s to {dst}", Unit.RATE),
        spec("chan_bytes_per_s", "bytes/s from source to destination",
             "{src} sent {value} to {dst}", Unit.BYTE_RATE),
        spec("chan_size_mean", "mean packet size source to destination",
             "{src} sent {dst} packets of {value} on average", Unit.BYTES),
        spec("chan_size_std", "std of packet size source to destination",
             "sizes of packets from {src} to {dst} varied by {value}", Unit.BYTES),
        spec("chan_distinct_dports", "distinct destination ports from source to destination",
             f"{{src}} contacted {{value}} distinct ports on {{dst}} in {w}", Unit.COUNT),
        spec("chan_distinct_sports", "distinct source ports from source to destination",
             f"{{src}} used {{value}} distinct source ports towards {{dst}} in {w}", Unit.COUNT),
        spec("flow_pkts_per_s", "packets/s of the flow (both directions)",
             "the flow {src}:{sport} - {dst}:{dport} carried {value} packets/s", Unit.RATE),
        spec("flow_bytes_per_s", "bytes/s of the flow (both directions)",
             "the flow {src}:{sport} - {dst}:{dport} carried {value}", Unit.BYTE_RATE),
        spec("flow_size_mean", "mean packet size of the flow",
             "the flow {src}:{sport} - {dst}:{dport} had packets of {value} on average", Unit.BYTES),
        spec("flow_fwd_share", "share of the flow's packets in this packet's direction",
             "{value} of the flow's packets went from {src} to {dst}", Unit.SHARE),
        # Not windowed: a connection is open once its handshake is done until a FIN or RST, or
        # until it has been silent for CONN_IDLE (``_open_connections``).
        FeatureSpec("client_open_conns",
                    "TCP connections the client holds open to the service (not closed by FIN/RST, "
                    "silent under CONN_IDLE)",
                    "{client} held {value} TCP connections open to {service}",
                    "value", Unit.COUNT, FeatureLevel.STANDARD),
    ]  # fmt: skip


def _advanced_specs(decays: tuple[float, ...]) -> list[FeatureSpec]:
    out: list[FeatureSpec] = []
    for lam in decays:
        # A damped statistic with half-life h weighs about the last 1.4 h: "over the last ~200 ms".
        half_life = format_value(1 / lam, Unit.SECONDS, digits=1)

        def spec(name: str, desc: str, text: str, unit: str, hl: str = half_life) -> FeatureSpec:
            return FeatureSpec(
                name,
                f"{desc} (damped, half-life {hl})",
                f"{text} over the last ~{hl}",
                "value",
                unit,
                FeatureLevel.ADVANCED,
            )

        sfx = f"l{lam:g}"
        for ent, who, of in (
            ("client", "{client}'s conversations", "client host's conversations"),
            ("service", "{service}", "service"),
        ):
            out += [
                spec(f"{ent}_w_{sfx}", f"decayed packet count of the {of}",
                     f"{who} carried about {{value}} packets", Unit.AMOUNT),
                spec(f"{ent}_mean_{sfx}", f"decayed mean packet size of the {of}",
                     f"packets of {who} averaged {{value}}", Unit.BYTES),
                spec(f"{ent}_std_{sfx}", f"decayed std of packet sizes of the {of}",
                     f"sizes of packets of {who} varied by {{value}}", Unit.BYTES),
            ]  # fmt: skip
        for ent, what, ends in (
            ("chan", "{src} to {dst}", "{src} and {dst}"),
            ("sock", "{src}:{sport} to {dst}:{dport}", "{src}:{sport} and {dst}:{dport}"),
        ):
            out += [
                spec(f"{ent}_w_{sfx}", f"decayed packet count {ent} this direction",
                     f"about {{value}} packets from {what}", Unit.AMOUNT),
                spec(f"{ent}_mean_{sfx}", f"decayed mean size {ent} this direction",
                     f"packets from {what} averaged {{value}}", Unit.BYTES),
                spec(f"{ent}_std_{sfx}", f"decayed size std {ent} this direction",
                     f"sizes of packets from {what} varied by {{value}}", Unit.BYTES),
                spec(f"{ent}_magnitude_{sfx}", f"sqrt of the two directions' squared mean sizes ({ent})",
                     f"packets between {ends} had a combined mean size (both directions) of {{value}}",
                     Unit.BYTES),
                spec(f"{ent}_radius_{sfx}", f"sqrt of the two directions' summed size variances ({ent})",
                     f"sizes of packets between {ends} (both directions) varied by {{value}}",
                     Unit.BYTES),
                spec(f"{ent}_reverse_share_{sfx}", f"share of packets in the reverse direction ({ent})",
                     f"replies made up {{value}} of the packets between {ends}", Unit.SHARE),
            ]  # fmt: skip
            if ent == "chan":
                out += [
                    spec(f"chan_jitter_mean_{sfx}", "decayed mean gap between packets of the host pair",
                         "packets between {src} and {dst} came every {value}", Unit.SECONDS),
                    spec(f"chan_jitter_std_{sfx}", "decayed std of gaps between packets of the host pair",
                         "gaps between packets of {src} and {dst} varied by {value}", Unit.SECONDS),
                ]  # fmt: skip
    return out


def feature_specs(
    level: str, *, window: float = WINDOW, decays: tuple[float, ...] = DECAYS
) -> list[FeatureSpec]:
    """The specs of the features at ``level``, in column order."""
    if level not in LEVELS:
        raise ValueError(f"unknown feature level {level!r}; known: {', '.join(LEVELS)}")
    specs = _low_specs()
    if level in (FeatureLevel.STANDARD, FeatureLevel.ADVANCED):
        specs += _standard_specs(window)
    if level == FeatureLevel.ADVANCED:
        specs += _advanced_specs(tuple(decays))
    return specs


def feature_names(level: str, *, window: float = WINDOW, decays: tuple[float, ...] = DECAYS) -> list[str]:
    """Column names of the feature matrix at ``level``."""
    return [s.name for s in feature_specs(level, window=window, decays=decays)]


_ALL_SPECS = {s.name: s for s in feature_specs(FeatureLevel.ADVANCED)}


def describe(name: str) -> FeatureSpec:
    """The spec of a feature by name (default window and decays; unknown names get a plain spec)."""
    spec = _ALL_SPECS.get(name)
    if spec is None:
        return FeatureSpec(name, name, f"{name} = {{value}}")
    return spec


# Which key's history a stateful feature needs, by its name's first word (the standard level's
# bidirectional "flow" is the advanced level's "sock": the same key).
_KIND_OF_PREFIX = {"client": "client", "service": "service", "chan": "chan", "flow": "sock", "sock": "sock"}


def key_kind(spec: FeatureSpec) -> str | None:
    """The key kind (``KEY_KINDS``) whose history ``spec``'s statistic needs; None for per-packet
    header features, which are never cold."""
    if spec.level == FeatureLevel.LOW:
        return None
    return _KIND_OF_PREFIX[spec.name.split("_", 1)[0]]


def neutralise(X: np.ndarray, cold: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """``X`` with its cold values (``transform_cold``'s mask) replaced by ``fill`` (one value per
    column), in place; returns ``X``. Does nothing when ``NEUTRALISE_COLD`` is off."""
    if not NEUTRALISE_COLD:
        return X
    np.copyto(X, np.broadcast_to(np.asarray(fill, X.dtype), X.shape), where=cold)
    return X


def warm_medians(X: np.ndarray, cold: np.ndarray, sample: int = 200_000) -> np.ndarray:
    """Per column, the median of the values that are not cold (of all of them where every one is):
    what training fills cold values with, so that the model learns the view it will score."""
    rows = np.arange(0, len(X), max(1, len(X) // sample))  # evenly spread rows are as good, and cheap
    Xs, Cs = X[rows], cold[rows]
    out = np.zeros(X.shape[1], np.float64)
    for j in np.flatnonzero(cold.any(axis=0)):
        warm = Xs[~Cs[:, j], j]
        out[j] = np.median(warm if len(warm) else Xs[:, j])
    return out


# ------------------------------------------------------------------------------------ hashing


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a cheap, well-spread 64-bit hash (uint64 arithmetic wraps)."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _combine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _mix(a ^ _mix(b + np.uint64(0x9E3779B97F4A7C15)))


def _host_hash(ip: np.ndarray, mac: np.ndarray, version: np.ndarray) -> np.ndarray:
    words = np.ascontiguousarray(ip).view("<u8").reshape(-1, 2)
    h = _combine(_mix(words[:, 0]), words[:, 1])
    # Non-IP frames are keyed by MAC, tagged so a MAC never collides with an address.
    return np.where(version == 0, _mix(mac ^ np.uint64(0xA5A5_0000_0000_0000)), h)


# ------------------------------------------------------------------------------------ scan


def _scan(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """In place on ``b`` (``a`` is scratch): ``s[i] = a[i] * s[i-1] + b[i]`` with ``s[-1] = 0``.

    ``a``: (n, L) factors in [0, 1]; ``b``: (n, L, m). Two-level blocked scan: a sequential pass
    inside blocks of ``_SCAN_BLOCK`` rows, vectorised across blocks; the block ends solved by the
    same scan recursively; then each block gets its predecessor's end times its decay product.
    """
    n = len(a)
    blk = _SCAN_BLOCK
    if n <= blk:
        for i in range(1, n):
            b[i] += a[i][..., None] * b[i - 1]
        return b
    nb = n // blk
    full = nb * blk
    S = b[:full].reshape(nb, blk, *b.shape[1:])
    A = a[:full].reshape(nb, blk, *a.shape[1:])
    tmp = np.empty_like(S[:, 0])
    for j in range(1, blk):
        np.multiply(A[:, j, ..., None], S[:, j - 1], out=tmp)
        S[:, j] += tmp
        A[:, j] *= A[:, j - 1]
    ends = _scan(A[:, -1].copy(), S[:, -1].copy())
    S[1:] += A[1:, ..., None] * ends[:-1, None]
    for i in range(full, n):
        b[i] += a[i][..., None] * b[i - 1]
    return b


# ------------------------------------------------------------------------------------ state


class _KeyTable:
    """Rows per key of one kind: sorted 64-bit keys, last time seen (``t_last``) and the per-key
    arrays named in ``columns`` (first axis: the key), forgotten after ``idle`` seconds unseen."""

    columns: tuple[str, ...] = ("t_last",)

    def __init__(self, idle: float) -> None:
        self.idle = idle
        self.keys = np.zeros(0, np.uint64)
        self.t_last = np.zeros(0, np.float64)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.searchsorted(self.keys, keys)
        idx_c = np.minimum(idx, max(len(self.keys) - 1, 0))
        found = (
            (idx < len(self.keys)) & (self.keys[idx_c] == keys)
            if len(self.keys)
            else np.zeros(len(keys), bool)
        )
        return idx_c, found

    def update(self, keys: np.ndarray, now: float, max_keys: int, **values: np.ndarray) -> None:
        """Set the rows of ``keys`` (unique) to ``values`` (one array per column), then evict."""
        idx, found = self.lookup(keys)
        for name, v in values.items():
            getattr(self, name)[idx[found]] = v[found]
        new = ~found
        if new.any():
            k = np.concatenate([self.keys, keys[new]])
            order = np.argsort(k, kind="stable")
            self.keys = k[order]
            for name, v in values.items():
                setattr(self, name, np.concatenate([getattr(self, name), v[new]])[order])
        self.evict(now, max_keys)

    def evict(self, now: float, max_keys: int) -> None:
        keep = self.t_last >= now - self.idle
        if keep.sum() > max_keys:
            # Over the cap: keep the most recently seen keys (approximate from here on).
            cut = np.partition(self.t_last[keep], -max_keys)[-max_keys]
            keep &= self.t_last >= cut
        if not keep.all():
            for name in ("keys", *self.columns):
                setattr(self, name, getattr(self, name)[keep])

    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in ("keys", *self.columns))


class _DampedSums(_KeyTable):
    """Damped sums per key (advanced level): ``sums`` of shape (keys, len(decays), m)."""

    columns = ("t_last", "sums")

    def __init__(self, n_decays: int, m: int, idle: float) -> None:
        super().__init__(idle)
        self.sums = np.zeros((0, n_decays, m), np.float64)


class _History(_KeyTable):
    """How much history each key has (cold start): when its current run of packets ``start``-ed and
    how many packets it has had since (``count``); a key idle over ``idle`` seconds starts again."""

    columns = ("t_last", "start", "count")

    def __init__(self, idle: float) -> None:
        super().__init__(idle)
        self.start = np.zeros(0, np.float64)
        self.count = np.zeros(0, np.int64)

    def cold(self, t: np.ndarray, g: _Grouping, now: float, max_keys: int, kind: str) -> np.ndarray:
        """Per packet (times ``t``, non-decreasing; keys grouped by ``g``), whether its key is cold;
        the rows are updated."""
        n = len(t)
        if not n:
            return np.zeros(0, bool)
        ts = t[g.order]
        gkeys = g.sorted_keys[g.first]
        ti, found = self.lookup(gkeys)
        prev = np.empty(n)
        prev[1:] = ts[:-1]
        t_prev = np.full(len(gkeys), -np.inf)
        t_prev[found] = self.t_last[ti[found]]
        prev[g.first] = t_prev
        restart = ts - prev > self.idle  # includes keys never seen (the gap is infinite)
        # A run begins at every restart and, continuing the saved row, at the first packet of a key.
        i = np.arange(n)
        begin = np.maximum.accumulate(np.where(restart | g.first, i, 0))
        base_count = np.zeros(n, np.int64)
        base_start = ts.copy()
        carry = found & ~restart[g.gstart]
        base_count[g.gstart[carry]] = self.count[ti[carry]]
        base_start[g.gstart[carry]] = self.start[ti[carry]]
        before = base_count[begin] + (i - begin)  # packets of the run before this one
        start = base_start[begin]
        cold = (before < COLD_PACKETS[kind]) & (ts - start < COLD_SECONDS[kind])
        last = np.concatenate([g.gstart[1:], [n]]) - 1
        self.update(gkeys, now, max_keys, t_last=ts[last], start=start[last], count=before[last] + 1)
        return cold[g.pos]


class _Openers(_KeyTable):
    """Which end opened each TCP/UDP conversation (socket pair), remembered across reads: ``low`` is
    True when the end with the smaller endpoint hash did. A TCP SYN names its source (a SYN-ACK its
    destination), so a connection's later packets, usually in later reads than its handshake, keep
    the right client whatever their ports; a UDP conversation's first packet names its source. A
    TCP conversation whose handshake was never seen stays unknown (``client_side``'s guess)."""

    columns = ("t_last", "low")

    def __init__(self, idle: float) -> None:
        super().__init__(idle)
        self.low = np.zeros(0, bool)

    def opened(
        self,
        t: np.ndarray,
        g: _Grouping,
        low_is_src: np.ndarray,
        claim: np.ndarray,
        first_sends: np.ndarray,
        now: float,
        max_keys: int,
    ) -> np.ndarray:
        """Per packet (times ``t``; conversations grouped by ``g``), 1 when its source opened its
        conversation, 0 when its destination did, -1 when unknown; the rows are updated.

        ``claim``: per packet, 1 when it shows its source opened (a SYN), 0 its destination (a
        SYN-ACK), else -1; ``first_sends``: the packet names its source when it is the first of a
        conversation not remembered (UDP). A later claim overrides (a socket pair reused)."""
        n = len(t)
        if not n:
            return np.zeros(0, np.int8)
        order = g.order
        ts, src_low = t[order], low_is_src[order]
        # Claims as "the low end opened" (1) / "the high end opened" (0), in grouped order.
        c = claim[order].astype(np.int8)
        c = np.where(c < 0, c, np.where(src_low, c, 1 - c)).astype(np.int8)
        gkeys = g.sorted_keys[g.first]
        ti, found = self.lookup(gkeys)
        if len(self.keys):
            found &= self.t_last[ti] >= ts[g.gstart] - self.idle  # idle too long: forgotten
        stored = np.where(found, self.low[ti].astype(np.int8) if len(self.keys) else 0, -1).astype(np.int8)
        first = g.gstart[(stored < 0) & first_sends[order][g.gstart] & (c[g.gstart] < 0)]
        c[first] = src_low[first]
        i = np.arange(n)
        last_claim = np.maximum.accumulate(np.where(c >= 0, i, -1))
        mine = last_claim >= g.gstart[g.grank_sorted]  # a claim of this conversation so far
        low = np.where(mine, c[np.maximum(last_claim, 0)], stored[g.grank_sorted])
        end = np.concatenate([g.gstart[1:], [n]]) - 1
        known = low[end] >= 0
        self.update(gkeys[known], now, max_keys, t_last=ts[end][known], low=low[end][known] == 1)
        out = np.where(low < 0, -1, (low == 1) == src_low).astype(np.int8)
        return out[g.pos]


_NOT_OPEN, _OPEN, _CLOSED = 0, 1, 2  # a TCP connection's state for ``client_open_conns``


class _Conns(_KeyTable):
    """TCP connections (socket pairs) for ``client_open_conns``: the (client host, service) pair
    each counts for (``pair``, set by the packet that opened it) and its ``state``: not open yet (a
    SYN seen, no handshake completed), open, or closed by a FIN or RST (its last packets do not
    open it again, a new SYN does). A connection silent for ``idle`` seconds is forgotten, and so
    no longer open (``_open_connections``)."""

    columns = ("t_last", "pair", "state")

    def __init__(self, idle: float) -> None:
        super().__init__(idle)
        self.pair = np.zeros(0, np.uint64)
        self.state = np.zeros(0, np.int8)  # _NOT_OPEN, _OPEN or _CLOSED
        self.capped = np.zeros(0, np.uint64)  # pairs of open connections the last evict dropped

    def evict(self, now: float, max_keys: int) -> None:
        # Open connections evicted by the key cap (never by idleness: their pair's count already
        # lost them) are reported, so their pair's count stays the number of open rows here.
        live = (self.state == _OPEN) & (self.t_last >= now - self.idle)
        before_keys, before_pair, live_keys = self.keys, self.pair[live], self.keys[live]
        super().evict(now, max_keys)
        if len(live_keys) and len(self.keys) < len(before_keys):
            gone = ~np.isin(live_keys, self.keys, assume_unique=True)
            self.capped = before_pair[gone]
        else:
            self.capped = np.zeros(0, np.uint64)


class _PairCounts(_KeyTable):
    """Per (client host, service) pair, how many of its TCP connections are open (``_Conns``);
    pairs without an open connection are not kept."""

    columns = ("t_last", "count")

    def __init__(self, idle: float) -> None:
        super().__init__(idle)
        self.count = np.zeros(0, np.int64)

    def drop_empty(self) -> None:
        keep = self.count > 0
        if not keep.all():
            for name in ("keys", *self.columns):
                setattr(self, name, getattr(self, name)[keep])


_TABLE_WIDTH = {"client": 3, "service": 3, "chan": 9, "sock": 6}
_TAIL_COLUMNS = (
    ("t", np.float64),
    ("tq", np.int64),
    ("size", np.float64),
    ("src", np.uint64),
    ("dst", np.uint64),
    ("sport", np.uint64),
    ("dport", np.uint64),
    ("flow", np.uint64),
    ("flow_dir", np.bool_),
    ("cis", np.bool_),
    ("service", np.uint64),
    ("syn", np.bool_),
    ("ack", np.bool_),
    ("rst", np.bool_),
)


class FeatureState:
    """The per-sensor memory of the stateful features; ``to_bytes``/``from_bytes`` for Redis.

    Holds the last timestamp (time never goes backwards: later packets are clamped to it), the
    tail of packets of the last ``window`` seconds (standard level), the damped sums per key
    (advanced level), each key's history (standard and advanced: cold start), which end opened
    each conversation (``openers``, every level: ``FeatureExtractor.transform_opened``) and which
    TCP connections are open (``conns``, ``conn_pairs``: ``client_open_conns``). Bounded:
    ``max_tail`` packets and ``max_keys`` keys per table.
    """

    def __init__(
        self,
        level: str = FeatureLevel.ADVANCED,
        *,
        window: float = WINDOW,
        decays: tuple[float, ...] = DECAYS,
        max_keys: int = 50_000,
        max_tail: int = 200_000,
    ) -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown feature level {level!r}")
        self.level = level
        self.window = float(window)
        self.decays = tuple(float(d) for d in decays)
        self.max_keys = int(max_keys)
        self.max_tail = int(max_tail)
        self.t_last = -math.inf
        self.packets = 0
        self.tail = {name: np.zeros(0, dtype) for name, dtype in _TAIL_COLUMNS}
        self.tables = {
            name: _DampedSums(len(self.decays), m, IDLE_RESET[name]) for name, m in _TABLE_WIDTH.items()
        }
        self.history = {name: _History(IDLE_RESET[name]) for name in KEY_KINDS}
        self.openers = _Openers(OPENER_IDLE)
        self.conns = _Conns(CONN_IDLE)
        self.conn_pairs = _PairCounts(CONN_IDLE)

    def _keyed(self) -> dict[str, _KeyTable]:
        """Every per-key table by its name in the serialised state."""
        history = {f"history_{name}": tab for name, tab in self.history.items()}
        conns = {"conns": self.conns, "conn_pairs": self.conn_pairs}
        return {**self.tables, **history, "openers": self.openers, **conns}

    def to_bytes(self) -> bytes:
        """Serialise (no pickle): ``_MAGIC``, the length of a JSON header (the meta and each array's
        name, dtype and shape), the header, then each array's bytes in order.

        Not an npz: zipping wrote headers and a CRC over every byte (7 MB under a port scan, saved
        after every read), which cost more than the copy; ``from_bytes`` still reads npz states.
        """
        meta = {
            "version": STATE_VERSION,
            "level": self.level,
            "window": self.window,
            "decays": list(self.decays),
            "max_keys": self.max_keys,
            "max_tail": self.max_tail,
            "t_last": self.t_last if math.isfinite(self.t_last) else None,
            "packets": self.packets,
        }
        arrays = {name: np.ascontiguousarray(a) for name, a in self._arrays().items()}
        listed = [[name, a.dtype.str, a.shape] for name, a in arrays.items()]
        header = json.dumps({"meta": meta, "arrays": listed}).encode()
        body = (a.data for a in arrays.values())
        return b"".join([_MAGIC, len(header).to_bytes(4, "little"), header, *body])

    def _arrays(self) -> dict[str, np.ndarray]:
        """Every array of the state by its name in the serialised state."""
        arrays = {f"tail_{k}": v for k, v in self.tail.items()}
        for name, tab in self._keyed().items():
            for column in ("keys", *tab.columns):
                arrays[f"{name}_{column}"] = getattr(tab, column)
        return arrays

    @classmethod
    def from_bytes(cls, data: bytes) -> FeatureState:
        """Restore a state saved by ``to_bytes``, or as an npz by an earlier release (raises
        ValueError on another version)."""
        if not data.startswith(_MAGIC):
            return cls._from_npz(data)
        at = len(_MAGIC) + 4
        size = int.from_bytes(data[len(_MAGIC) : at], "little")
        header = json.loads(data[at : at + size].decode())
        # one writable copy of the arrays' bytes (the tables are updated in place)
        body = bytearray(memoryview(data)[at + size :])
        arrays, offset = {}, 0
        for name, dtype, shape in header["arrays"]:
            dt = np.dtype(dtype)
            count = math.prod(shape)
            arrays[name] = np.frombuffer(body, dt, count, offset).reshape(shape)
            offset += count * dt.itemsize
        if offset != len(body):
            raise ValueError("feature state: its arrays do not add up to its length")
        return cls._restore(header["meta"], arrays)

    @classmethod
    def _from_npz(cls, data: bytes) -> FeatureState:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            return cls._restore(meta, {name: z[name] for name in z.files if name != "meta"})

    @classmethod
    def _restore(cls, meta: dict, arrays: dict[str, np.ndarray]) -> FeatureState:
        if meta.get("version") != STATE_VERSION:
            raise ValueError(f"feature state version {meta.get('version')!r}, expected {STATE_VERSION}")
        st = cls(
            meta["level"],
            window=meta["window"],
            decays=tuple(meta["decays"]),
            max_keys=meta["max_keys"],
            max_tail=meta["max_tail"],
        )
        st.t_last = -math.inf if meta["t_last"] is None else float(meta["t_last"])
        st.packets = int(meta["packets"])
        st.tail = {name: arrays[f"tail_{name}"].astype(dtype) for name, dtype in _TAIL_COLUMNS}
        for name, tab in st._keyed().items():
            if name in ("openers", "conns", "conn_pairs") and f"{name}_keys" not in arrays:
                continue  # saved before the table existed: start with it empty, keep the rest
            for column in ("keys", *tab.columns):
                setattr(tab, column, arrays[f"{name}_{column}"])
        return st

    def memory_bytes(self) -> int:
        """Approximate size of the state's arrays."""
        n = sum(v.nbytes for v in self.tail.values())
        return n + sum(tab.nbytes() for tab in self._keyed().values())


# ------------------------------------------------------------------------------------ helpers


_PRIVATE_V4 = (
    (0x0A000000, 0xFF000000),  # 10/8
    (0xAC100000, 0xFFF00000),  # 172.16/12
    (0xC0A80000, 0xFFFF0000),  # 192.168/16
    (0x7F000000, 0xFF000000),  # 127/8
    (0xA9FE0000, 0xFFFF0000),  # 169.254/16
)


def _internal(ip: np.ndarray, version: np.ndarray) -> np.ndarray:
    v4 = ip[:, 12:16].astype(np.uint32)
    a = (v4[:, 0] << 24) | (v4[:, 1] << 16) | (v4[:, 2] << 8) | v4[:, 3]
    priv4 = np.zeros(len(ip), bool)
    for net, mask in _PRIVATE_V4:
        priv4 |= (a & mask) == net
    loop6 = (ip[:, :15] == 0).all(axis=1) & (ip[:, 15] == 1)
    priv6 = ((ip[:, 0] & 0xFE) == 0xFC) | ((ip[:, 0] == 0xFE) & ((ip[:, 1] & 0xC0) == 0x80)) | loop6
    return np.where(version == 4, priv4, np.where(version == 6, priv6, False))


def _port_class(port: np.ndarray, has_ports: np.ndarray) -> list[np.ndarray]:
    return [
        has_ports & (port < 1024),
        has_ports & (port >= 1024) & (port < 49152),
        has_ports & (port >= 49152),
    ]


def client_side(records: np.ndarray, opened: np.ndarray | None = None) -> np.ndarray:
    """Per packet, True when its source started the conversation (is the client), else False.

    ``opened`` (``FeatureExtractor.transform_opened``: 1 the source opened the conversation, 0 the
    destination, -1 unknown) comes first where known: the state remembers each conversation's
    opener across reads. Otherwise the guess is stateless, so every batching agrees: a TCP SYN
    comes from the client and a SYN-ACK from the server; otherwise, for TCP and UDP, the end with
    the higher port is the client (services listen on low ports, clients connect from ephemeral
    ones; equal ports count the source); ICMP echo replies and errors answer their destination;
    any other packet is its source's. The features use the stateless guess (the models were
    trained on it); incidents use the opener.
    """
    version = records["ip_version"]
    proto = records["proto"].astype(np.int64)
    has_ports = (version > 0) & ((proto == 6) | (proto == 17))
    flags = records["tcp_flags"].astype(np.int64) * (proto == 6)
    guess = _client_side(records, version, proto, has_ports, flags)
    if opened is None:
        return guess
    return np.where(opened >= 0, opened == 1, guess)


def _client_side(
    records: np.ndarray, version: np.ndarray, proto: np.ndarray, has_ports: np.ndarray, flags: np.ndarray
) -> np.ndarray:
    """``client_side`` with the columns the extractor has computed already."""
    sp = records["sport"].astype(np.int64)  # the ICMP type for ICMP
    dp = records["dport"].astype(np.int64)
    syn = (flags & 2) > 0
    ack = (flags & 16) > 0
    answer = ((version > 0) & (proto == 1) & np.isin(sp, _ICMP_ANSWERS)) | (
        (version > 0) & (proto == 58) & np.isin(sp, _ICMP6_ANSWERS)
    )
    by_ports = np.where(has_ports, sp >= dp, ~answer)
    return np.where(syn & ~ack, True, np.where(syn & ack, False, by_ports))


# ICMP types that answer the packet's destination: echo reply, errors, timestamp/info/mask replies
_ICMP_ANSWERS = (0, 3, 4, 5, 11, 12, 14, 16, 18)
_ICMP6_ANSWERS = (1, 2, 3, 4, 129)


class _Grouping:
    """Packets grouped by key: stable order (time order inside a group) and group bookkeeping."""

    def __init__(self, key: np.ndarray) -> None:
        n = len(key)
        self.n = n
        self.order = np.argsort(key, kind="stable")
        ks = key[self.order]
        self.first = np.ones(n, bool)
        if n:
            self.first[1:] = ks[1:] != ks[:-1]
        self.gstart = np.flatnonzero(self.first)
        grank_sorted = np.cumsum(self.first) - 1
        self.grank_sorted = grank_sorted
        self.pos = np.empty(n, np.int64)
        self.pos[self.order] = np.arange(n)
        self.grank = np.empty(n, np.int64)
        self.grank[self.order] = grank_sorted
        self.sorted_keys = ks


def _open_connections(
    t: np.ndarray,
    tcp: np.ndarray,
    conn: np.ndarray,
    pair: np.ndarray,
    syn: np.ndarray,
    syn_ack: np.ndarray,
    fin_rst: np.ndarray,
    state: FeatureState,
) -> np.ndarray:
    """Per packet, how many established TCP connections its (client host, service) ``pair`` holds
    open at its time, its own included (``client_open_conns``; 0 for packets that are not TCP).

    A connection (``conn``: the socket pair) is open from its first packet that is not a SYN or a
    SYN-ACK (the handshake's last ACK, or any packet of one first seen mid-stream) until a FIN or
    RST in either direction (the packet itself still counts it) or until it has been silent for
    ``CONN_IDLE`` seconds; a SYN starts it again, not yet open. So a SYN flood's half-open
    attempts and a scan's probes hold nothing open, and the packets after a FIN do not reopen it.
    It counts for the pair of the packet that opened it. Exact whatever the batching: the state
    keeps each connection's last time, pair and state (``state.conns``) and each pair's count
    (``state.conn_pairs``). A held-open request (slowloris) keeps hundreds open from one client; a
    browser a handful.
    """
    n = len(t)
    out = np.zeros(n, np.float64)
    idx = np.flatnonzero(tcp)
    m = len(idx)
    if not m:
        return out  # nothing changes: expiries are counted when the next TCP packet comes
    conns, pairs = state.conns, state.conn_pairs
    idle = conns.idle
    tt = t[idx]
    now = float(tt[-1])
    g = _Grouping(conn[idx])
    o = g.order
    ts, s_pair = tt[o], pair[idx][o]
    s_syn, s_synack, s_end = syn[idx][o], syn_ack[idx][o], fin_rst[idx][o]
    gkeys = g.sorted_keys[g.first]
    ti, found = conns.lookup(gkeys)
    st_t = np.full(len(gkeys), -np.inf)  # per socket: the state's last time, state, pair
    st_state = np.zeros(len(gkeys), np.int8)
    st_pair = np.zeros(len(gkeys), np.uint64)
    if found.any():
        st_t[found], st_state[found], st_pair[found] = (
            conns.t_last[ti[found]],
            conns.state[ti[found]],
            conns.pair[ti[found]],
        )
    grp = g.grank_sorted
    gs = g.gstart[grp]  # each packet's group start, in grouped order
    prev = np.empty(m)
    prev[1:] = ts[:-1]
    prev[g.first] = st_t
    restart = ts - prev > idle  # a connection never seen, or silent too long: a new one
    # The state after each packet (_NOT_OPEN, _OPEN, _CLOSED). FIN/RST closes, a SYN starts again,
    # a restart starts again and opens unless it is a SYN-ACK: these decide whatever came before.
    # After them, a SYN-ACK changes nothing and any other packet opens what is not closed.
    s_fin_or_syn = s_end | s_syn
    decisive = restart | s_fin_or_syn
    value = np.where(s_end, _CLOSED, np.where(s_syn | s_synack, _NOT_OPEN, _OPEN)).astype(np.int8)
    i = np.arange(m)
    other = ~decisive & ~s_synack
    last_dec = np.maximum.accumulate(np.where(decisive, i, -1))
    last_other = np.maximum.accumulate(np.where(other, i, -1))
    mine = last_dec >= gs
    v = np.where(mine, value[np.maximum(last_dec, 0)], st_state[grp])
    opened_since = last_other > np.where(mine, last_dec, gs - 1)
    after = np.where(v == _CLOSED, _CLOSED, np.where(opened_since | (v == _OPEN), _OPEN, _NOT_OPEN))
    before = np.empty(m, np.int8)
    before[1:] = after[:-1]
    before[g.first] = st_state
    before[restart] = _NOT_OPEN
    is_open, was_open = after == _OPEN, before == _OPEN
    start = is_open & ~was_open
    close = was_open & ~is_open
    last_start = np.maximum.accumulate(np.where(start, i, -1))
    seg_pair = np.where(last_start >= gs, s_pair[np.maximum(last_start, 0)], st_pair[grp])
    # A connection open after a packet ends silently when the next packet of its socket restarts,
    # or, after its last packet, once CONN_IDLE has passed by the end of the batch.
    last = np.zeros(m, bool)
    last[g.gstart[1:] - 1] = True
    last[-1] = True
    nxt_restart = np.zeros(m, bool)
    nxt_restart[:-1] = restart[1:]
    expire = is_open & np.where(last, ts < now - idle, nxt_restart)
    # Connections of the state not continued here that fell silent: the batch's restarts of them,
    # and those not in the batch at all.
    gone = (conns.state == _OPEN) & (conns.t_last < now - idle)
    if len(conns.keys):
        gone[ti[found & ~restart[g.gstart]]] = False
    # Events per pair: +1 at a start (counted from that packet on), -1 after a closing packet, -1
    # from the first packet later than a silent connection's CONN_IDLE.
    pos = o  # stream position (among the TCP packets) of each grouped packet
    ev_t = np.concatenate([ts[expire], conns.t_last[gone]]) + idle
    ev_pair = np.concatenate([s_pair[start], seg_pair[close], seg_pair[expire], conns.pair[gone]])
    ev_key = np.concatenate([2 * pos[start], 2 * pos[close] + 1, 2 * np.searchsorted(tt, ev_t, side="right")])
    ev_w = np.concatenate([np.ones(start.sum(), np.int64), -np.ones(len(ev_pair) - start.sum(), np.int64)])
    uniq, inv = np.unique(np.concatenate([pair[idx], ev_pair]), return_inverse=True)
    q_rank, ev_rank = inv[:m], inv[m:]
    span = 2 * m + 2
    comp = ev_rank * span + ev_key
    order = np.argsort(comp, kind="stable")
    comp = comp[order]
    cw = np.concatenate([[0], np.cumsum(ev_w[order])])
    q = q_rank * span + 2 * np.arange(m)
    pi, pf = pairs.lookup(uniq)
    base = np.zeros(len(uniq), np.int64)  # open before the batch
    base[pf] = pairs.count[pi[pf]]
    upto = cw[np.searchsorted(comp, q, side="right")]
    within = upto - cw[np.searchsorted(comp, q_rank * span, side="left")]
    out[idx] = np.maximum(base[q_rank] + within, 0)
    # Carry the connections and the pairs' counts to the next batch.
    end = np.concatenate([g.gstart[1:], [m]]) - 1
    conns.update(gkeys, now, state.max_keys, t_last=ts[end], pair=seg_pair[end], state=after[end])
    total = base + np.bincount(ev_rank, weights=ev_w, minlength=len(uniq)).astype(np.int64)
    pairs.update(uniq, now, state.max_keys, t_last=np.full(len(uniq), now), count=np.maximum(total, 0))
    if len(conns.capped):  # open connections the key cap dropped no longer count
        ci, cf = pairs.lookup(conns.capped)
        np.subtract.at(pairs.count, ci[cf], 1)
    pairs.drop_empty()
    return out


# ------------------------------------------------------------------------------------ extractor


class FeatureExtractor:
    """Turns record batches into float32 feature matrices at one level (see module docstring)."""

    def __init__(
        self,
        level: str = FeatureLevel.ADVANCED,
        *,
        window: float = WINDOW,
        decays: tuple[float, ...] = DECAYS,
        max_keys: int = 50_000,
        max_tail: int = 200_000,
        chunk: int = _CHUNK,
    ) -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown feature level {level!r}; known: {', '.join(LEVELS)}")
        if window <= 0 or not decays or min(decays) <= 0:
            raise ValueError("window and decays must be positive")
        self.level = level
        self.window = float(window)
        self.decays = tuple(float(d) for d in decays)
        self.max_keys = max_keys
        self.max_tail = max_tail
        self.chunk = chunk
        self.specs = feature_specs(level, window=self.window, decays=self.decays)
        self.names = [s.name for s in self.specs]
        # Per column, the index in KEY_KINDS of the key whose history it needs (len(KEY_KINDS): none).
        kinds = [key_kind(s) for s in self.specs]
        self._cold_column = np.array([len(KEY_KINDS) if k is None else KEY_KINDS.index(k) for k in kinds])

    @property
    def n_features(self) -> int:
        return len(self.names)

    def new_state(self) -> FeatureState:
        """An empty state matching this extractor."""
        return FeatureState(
            self.level, window=self.window, decays=self.decays, max_keys=self.max_keys, max_tail=self.max_tail
        )

    def transform(self, records: np.ndarray, state: FeatureState | None = None) -> np.ndarray:
        """Features of ``records`` (float32, shape (n, n_features)); updates ``state`` in place.

        Without a state the batch is featurised as a stream of its own. Never returns NaN/inf.
        """
        return self.transform_opened(records, state)[0]

    def transform_cold(
        self, records: np.ndarray, state: FeatureState | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``transform``, and beside the features a boolean mask of the same shape: True where the
        value is a cold statistic (its key has too little history, see ``COLD_PACKETS``)."""
        X, cold, _ = self.transform_opened(records, state)
        return X, cold

    def transform_opened(
        self, records: np.ndarray, state: FeatureState | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``transform_cold``, and per packet (int8) whether its source opened its conversation: 1
        yes, 0 its destination did, -1 unknown (not TCP/UDP, or a TCP handshake never seen). The
        state remembers openers across calls (``_Openers``); ``client_side(records, opened)``
        turns it into each packet's client."""
        if state is None:
            state = self.new_state()
        elif (state.level, state.window, state.decays) != (self.level, self.window, self.decays):
            raise ValueError("feature state was made for another level, window or decays")
        n = len(records)
        out = np.empty((n, self.n_features), np.float32)
        cold = np.empty((n, self.n_features), bool)
        opened = np.empty(n, np.int8)
        for lo in range(0, n, self.chunk):
            hi = min(n, lo + self.chunk)
            out[lo:hi], by_kind, opened[lo:hi] = self._transform_chunk(records[lo:hi], state)
            cold[lo:hi] = by_kind[:, self._cold_column]
        return out, cold, opened

    # -- one chunk

    def _transform_chunk(
        self, rec: np.ndarray, state: FeatureState
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features of a chunk, per packet whether each key kind's statistics are cold (shape
        (n, len(KEY_KINDS) + 1), the last column False for the per-packet features), and per packet
        whether its source opened its conversation (``transform_opened``)."""
        n = len(rec)
        t = rec["ts"].astype(np.float64)
        t = np.where(np.isfinite(t), t, 0.0)
        t = np.clip(t, 0.0, _MAX_TS)
        start = state.t_last if math.isfinite(state.t_last) else 0.0
        t = np.maximum.accumulate(np.concatenate([[start], t]))[1:]
        version = rec["ip_version"]
        proto = rec["proto"].astype(np.int64)
        has_ports = (version > 0) & ((proto == 6) | (proto == 17))
        sport = np.where(has_ports, rec["sport"], 0).astype(np.uint64)
        dport = np.where(has_ports, rec["dport"], 0).astype(np.uint64)
        flags = rec["tcp_flags"].astype(np.int64) * (proto == 6)
        src = _host_hash(rec["src_ip"], rec["src_mac"], version)
        dst = _host_hash(rec["dst_ip"], rec["dst_mac"], version)
        # Sockets are unordered: both directions of a conversation share one key.
        e_src = _combine(src, sport * np.uint64(257) + proto.astype(np.uint64))
        e_dst = _combine(dst, dport * np.uint64(257) + proto.astype(np.uint64))
        flow = _combine(np.minimum(e_src, e_dst), np.maximum(e_src, e_dst))
        sock: _Grouping | None = None

        cols = [self._low(rec, version, proto, has_ports, flags)]
        cold = np.zeros((n, len(KEY_KINDS) + 1), bool)
        if self.level != FeatureLevel.LOW:
            size = rec["length"].astype(np.float64)
            cis = _client_side(rec, version, proto, has_ports, flags)
            client, server = np.where(cis, src, dst), np.where(cis, dst, src)
            # A service is the server's end (host, port, protocol); without ports, the server host.
            service = np.where(has_ports, np.where(cis, e_dst, e_src), server)
            cur = {
                "t": t,
                "tq": np.round(t * 1e6).astype(np.int64),
                "size": size,
                "src": src,
                "dst": dst,
                "sport": sport,
                "dport": dport,
                "flow": flow,
                "flow_dir": e_src <= e_dst,
                "cis": cis,
                "service": service,
                "syn": (flags & 2).astype(bool) & ~(flags & 16).astype(bool),
                "ack": (flags & 16).astype(bool),
                "rst": (flags & 4).astype(bool),
            }
            # The chunk's packets grouped per key kind: for the history and the damped statistics.
            chan = _combine(np.minimum(src, dst), np.maximum(src, dst))  # the host pair, both ways
            keys = {"client": client, "service": service, "chan": chan, "sock": flow}
            groups = {kind: _Grouping(keys[kind]) for kind in KEY_KINDS}
            sock = groups["sock"]
            for k, kind in enumerate(KEY_KINDS):
                cold[:, k] = state.history[kind].cold(t, groups[kind], float(t[-1]), state.max_keys, kind)
            cols.append(self._standard(cur, state))
            tcp = has_ports & (proto == 6)
            end = (flags & 5) > 0  # FIN or RST
            syn_ack = ((flags & 18) == 18) & tcp
            conns = _open_connections(
                t, tcp, flow, _combine(client, service), cur["syn"], syn_ack, end, state
            )
            cols.append(conns[:, None])
            if self.level == FeatureLevel.ADVANCED:
                cols.append(self._advanced(t, size, src, dst, e_src, e_dst, groups, state))
        opened = self._opened(t, flags, proto, has_ports, e_src, e_dst, flow, sock, state)
        state.t_last = float(t[-1]) if n else state.t_last
        state.packets += n
        x = np.empty((n, self.n_features), np.float32)
        c0 = 0
        for block in cols:
            # clip maps +-inf to the limit; NaN (0/0 on garbage input) becomes 0
            np.clip(block, -_OUT_LIMIT, _OUT_LIMIT, out=block)
            block[np.isnan(block)] = 0.0
            x[:, c0 : c0 + block.shape[1]] = block
            c0 += block.shape[1]
        return x, cold, opened

    @staticmethod
    def _opened(
        t: np.ndarray,
        flags: np.ndarray,
        proto: np.ndarray,
        has_ports: np.ndarray,
        e_src: np.ndarray,
        e_dst: np.ndarray,
        flow: np.ndarray,
        sock: _Grouping | None,
        state: FeatureState,
    ) -> np.ndarray:
        """Per packet, whether its source opened its conversation (``transform_opened``)."""
        n = len(t)
        if not n:
            return np.zeros(0, np.int8)
        tcp = has_ports & (proto == 6)
        syn, ack = (flags & 2) > 0, (flags & 16) > 0
        claim = np.where(tcp & syn & ~ack, 1, np.where(tcp & syn & ack, 0, -1)).astype(np.int8)
        udp = has_ports & (proto == 17)
        g = sock if sock is not None else _Grouping(flow)  # the socket pairs (grouped once per chunk)
        opened = state.openers.opened(t, g, e_src <= e_dst, claim, udp, float(t[-1]), state.max_keys)
        return np.where(has_ports, opened, -1).astype(np.int8)

    @staticmethod
    def _low(
        rec: np.ndarray, version: np.ndarray, proto: np.ndarray, has_ports: np.ndarray, flags: np.ndarray
    ):
        n = len(rec)
        length = rec["length"].astype(np.float64)
        payload = rec["payload_len"].astype(np.float64)
        is_ip = version > 0
        sp = rec["sport"].astype(np.int64)
        dp = rec["dport"].astype(np.int64)
        src_int = _internal(rec["src_ip"], version)
        dst_int = _internal(rec["dst_ip"], version)
        dst_mc = (rec["dst_mac"] == 0xFFFFFFFFFFFF) | ((version == 4) & (rec["dst_ip"][:, 12] >= 224))
        dst_mc |= (version == 6) & (rec["dst_ip"][:, 0] == 0xFF)

        def either(*ports: int) -> np.ndarray:
            return has_ports & (np.isin(sp, ports) | np.isin(dp, ports))

        cols = [
            length,
            payload,
            np.maximum(length - payload, 0.0),
            is_ip & (proto == 6),
            is_ip & (proto == 17),
            is_ip & ((proto == 1) | (proto == 58)),
            is_ip & ~np.isin(proto, (1, 6, 17, 58)),
            ~is_ip,
            version == 6,
            *_port_class(sp, has_ports),
            *_port_class(dp, has_ports),
            either(80, 8080),
            either(443),
            either(53),
            either(22),
            either(123),
            *[(flags & bit) > 0 for bit in (1, 2, 4, 8, 16, 32, 64, 128)],
            rec["ttl"].astype(np.float64),
            is_ip & src_int & dst_int,
            is_ip & src_int & ~dst_int,
            is_ip & ~src_int & dst_int,
            is_ip & ~src_int & ~dst_int,
            dst_mc,
            rec["frag"] > 0,
            rec["status"] > 0,
            is_ip & (((proto == 1) & np.isin(sp, (3, 11))) | ((proto == 58) & np.isin(sp, (1, 3)))),
        ]
        x = np.empty((n, len(cols)), np.float64)
        for i, c in enumerate(cols):
            x[:, i] = c
        return x

    # -- standard level: exact sliding windows over tail + chunk

    def _standard(self, cur: dict[str, np.ndarray], state: FeatureState) -> np.ndarray:
        from detection.repeats import next_equal  # Numba: loaded by the processes that featurise

        W = self.window
        off = len(state.tail["t"])
        c = {k: np.concatenate([state.tail[k], cur[k]]) for k in cur}
        N = len(c["t"])
        t = c["t"]
        idx = np.arange(N)
        mine = slice(off, N)
        kstart = np.searchsorted(t, t - W, side="right")  # first packet inside each packet's window
        texp = np.searchsorted(t, t + W, side="left")  # first packet whose window no longer holds it
        size = c["size"]
        src, dst, cis = c["src"], c["dst"], c["cis"]
        chan = _combine(src, dst)
        # The tail keeps only which end is the client: the ends follow from it (a smaller state).
        client, server = np.where(cis, src, dst), np.where(cis, dst, src)
        cport, svport = np.where(cis, c["sport"], c["dport"]), np.where(cis, c["dport"], c["sport"])
        out = []

        groups = {
            "client": _Grouping(client),
            "service": _Grouping(c["service"]),
            "chan": _Grouping(chan),
            "flow": _Grouping(c["flow"]),
        }

        def window(g: _Grouping) -> tuple[np.ndarray, np.ndarray]:
            comp = g.grank_sorted * (N + 1) + g.order
            ws = np.searchsorted(comp, g.grank[mine] * (N + 1) + kstart[mine], side="left")
            return ws, g.pos[mine]

        def wsum(g: _Grouping, ws: np.ndarray, p: np.ndarray, v: np.ndarray) -> np.ndarray:
            cs = np.concatenate([[0.0], np.cumsum(v[g.order], dtype=np.float64)])
            return cs[p + 1] - cs[ws]

        def distinct(g: _Grouping, value: np.ndarray) -> np.ndarray:
            kv = _combine(g.sorted_keys, value[g.order])  # in g's sorted order
            nxt = next_equal(kv)  # next occurrence (N: none), as a position in g's order...
            # ...converted to the packet index, comparable with texp
            nxt_idx = np.where(nxt < N, g.order[np.minimum(nxt, N - 1)], N)
            end = np.minimum(nxt_idx, texp[g.order])
            comp_end = np.sort(g.grank_sorted * (N + 1) + end)
            gi = g.grank[mine]
            ended = np.searchsorted(comp_end, gi * (N + 1) + idx[mine], side="right") - g.gstart[gi]
            return (g.pos[mine] - g.gstart[gi] + 1) - ended

        def size_stats(g: _Grouping, ws: np.ndarray, p: np.ndarray, cnt: np.ndarray) -> list[np.ndarray]:
            # Sizes are integers, so these sums are exact and the variance numerator too.
            s1 = wsum(g, ws, p, size)
            s2 = wsum(g, ws, p, size * size)
            var = np.maximum(cnt * s2 - s1 * s1, 0.0) / (cnt * cnt)
            return [s1 / W, s1 / cnt, np.sqrt(var)]

        # per client host, both directions of its conversations
        g = groups["client"]
        ws, p = window(g)
        cnt = (p - ws + 1).astype(np.float64)
        rate_b, mean, std = size_stats(g, ws, p, cnt)
        iat_mean, iat_std = self._gaps(g, ws, p, c["tq"])
        syn = wsum(g, ws, p, c["syn"].astype(np.float64))
        ack = wsum(g, ws, p, c["ack"].astype(np.float64))
        rst = wsum(g, ws, p, c["rst"].astype(np.float64))
        out += [cnt / W, rate_b, mean, std, iat_mean, iat_std]
        out += [
            distinct(g, svport),
            distinct(g, server),
            distinct(g, cport),
            syn / np.maximum(syn + ack, 1.0),
        ]
        out += [rst / W]

        # per service, both directions
        g = groups["service"]
        ws, p = window(g)
        cnt = (p - ws + 1).astype(np.float64)
        out += [cnt / W, wsum(g, ws, p, size) / W, distinct(g, client), distinct(g, cport)]
        out += [wsum(g, ws, p, c["syn"].astype(np.float64)) / W]

        # per directed host pair
        g = groups["chan"]
        ws, p = window(g)
        cnt = (p - ws + 1).astype(np.float64)
        rate_b, mean, std = size_stats(g, ws, p, cnt)
        out += [cnt / W, rate_b, mean, std, distinct(g, c["dport"]), distinct(g, c["sport"])]

        # per bidirectional flow
        g = groups["flow"]
        ws, p = window(g)
        cnt = (p - ws + 1).astype(np.float64)
        s1 = wsum(g, ws, p, size)
        fwd = wsum(g, ws, p, c["flow_dir"].astype(np.float64))
        share = np.where(c["flow_dir"][mine], fwd, cnt - fwd) / cnt
        out += [cnt / W, s1 / W, s1 / cnt, share]

        # Keep the packets that windows of later packets can still reach.
        keep_from = int(np.searchsorted(t, t[-1] - W, side="right")) if N else 0
        keep_from = max(keep_from, N - state.max_tail)
        state.tail = {k: v[keep_from:].copy() for k, v in c.items()}
        return np.stack(out, axis=1)

    def _gaps(
        self, g: _Grouping, ws: np.ndarray, p: np.ndarray, tq: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of the gaps between a key's packets inside the window, in seconds.

        Gaps are whole microseconds and sums are int64, so the result is exact whatever the
        batching (a window's gaps add up to at most the window, so nothing overflows).
        """
        tqs = tq[g.order]
        gap = np.zeros(g.n, np.int64)
        gap[1:] = np.where(g.first[1:], 0, tqs[1:] - tqs[:-1])
        np.minimum(gap, int(self.window * 1e6) + 1, out=gap)
        cs1 = np.concatenate([[0], np.cumsum(gap)])
        cs2 = np.concatenate([[0], np.cumsum(gap * gap)])
        k = p - ws  # gaps inside the window
        s1 = cs1[p + 1] - cs1[ws + 1]
        s2 = cs2[p + 1] - cs2[ws + 1]
        kf = np.maximum(k, 1).astype(np.float64)
        multi = k > 0
        mean = np.where(multi, s1 / kf, self.window * 1e6)
        num = (k * s2 - s1 * s1).astype(np.float64)
        std = np.where(multi, np.sqrt(np.maximum(num, 0.0)) / kf, 0.0)
        return mean * 1e-6, std * 1e-6

    # -- advanced level: damped statistics per key via exact scans

    def _advanced(
        self,
        t: np.ndarray,
        size: np.ndarray,
        src: np.ndarray,
        dst: np.ndarray,
        e_src: np.ndarray,
        e_dst: np.ndarray,
        groups: dict[str, _Grouping],
        state: FeatureState,
    ) -> np.ndarray:
        lam = np.asarray(self.decays)
        n = len(t)
        L = len(lam)
        now = float(t[-1])
        s2 = size * size
        parts: dict[str, np.ndarray] = {}

        def run(name: str, build) -> tuple[_Grouping, np.ndarray]:
            """Damped sums per key, in the grouping's sorted order, state folded in and updated."""
            tab = state.tables[name]
            g = groups[name]
            ts = t[g.order]
            gkeys = g.sorted_keys[g.first]
            ti, found = tab.lookup(gkeys)
            t_prev = np.full(len(gkeys), -np.inf)
            t_prev[found] = tab.t_last[ti[found]]
            prev = np.empty(n)
            prev[1:] = ts[:-1]
            prev[g.first] = t_prev
            dt = ts - prev
            reset = dt > tab.idle  # includes keys never seen (dt = inf)
            a = np.exp2(-lam[None, :] * np.minimum(dt, tab.idle)[:, None])
            a[reset] = 0.0
            cols = build(g.order, reset, np.minimum(dt, _MAX_IAT))
            b = np.empty((n, L, len(cols)))
            for k, col in enumerate(cols):
                b[:, :, k] = col[:, None]
            fpos = g.gstart
            carry = found & ~reset[fpos]
            b[fpos[carry]] += a[fpos[carry]][:, :, None] * tab.sums[ti[carry]]
            a[fpos] = 0.0
            S = _scan(a, b)
            last = np.concatenate([g.gstart[1:], [n]]) - 1
            tab.update(gkeys, now, state.max_keys, t_last=ts[last], sums=S[last])
            return g, S

        def plain(order: np.ndarray, reset: np.ndarray, dt: np.ndarray) -> list[np.ndarray]:
            return [np.ones(n), size[order], s2[order]]

        for name in ("client", "service"):
            g, S = run(name, plain)
            w = S[:, :, 0]
            mean = S[:, :, 1] / w
            S[:, :, 1] = mean
            S[:, :, 2] = _std(S[:, :, 2] / w, mean)
            parts[name] = S[g.pos]  # back to packet order

        for name, a_end, b_end in (("chan", src, dst), ("sock", e_src, e_dst)):
            jitter = name == "chan"
            d = a_end <= b_end  # the key (groups[name]) is the unordered pair of ends

            def build(order: np.ndarray, reset: np.ndarray, dt: np.ndarray, d=d, jitter=jitter) -> list:
                fw = d[order].astype(np.float64)
                bw = 1.0 - fw
                x, xx = size[order], s2[order]
                cols = [fw, fw * x, fw * xx, bw, bw * x, bw * xx]
                if jitter:
                    h = (~reset).astype(np.float64)
                    cols += [h, h * dt, h * dt * dt]
                return cols

            g, S = run(name, build)
            dd = d[g.order][:, None, None]
            this = np.where(dd, S[:, :, 0:3], S[:, :, 3:6])
            other = np.where(dd, S[:, :, 3:6], S[:, :, 0:3])
            w_t, w_o = this[:, :, 0], other[:, :, 0]
            mean_t = this[:, :, 1] / w_t
            var_t = _var(this[:, :, 2] / w_t, mean_t)
            has_o = w_o > 1e-12
            w_o_safe = np.where(has_o, w_o, 1.0)
            mean_o = np.where(has_o, other[:, :, 1] / w_o_safe, 0.0)
            var_o = np.where(has_o, _var(other[:, :, 2] / w_o_safe, mean_o), 0.0)
            o = np.empty((n, L, 8 if jitter else 6))
            o[:, :, 0] = w_t
            o[:, :, 1] = mean_t
            o[:, :, 2] = np.sqrt(var_t)
            o[:, :, 3] = np.sqrt(mean_t * mean_t + mean_o * mean_o)
            o[:, :, 4] = np.sqrt(var_t + var_o)
            o[:, :, 5] = w_o / (w_t + w_o)
            if jitter:
                wj = S[:, :, 6]
                has_j = wj > 1e-12
                wj_safe = np.where(has_j, wj, 1.0)
                jm = np.where(has_j, S[:, :, 7] / wj_safe, 0.0)
                o[:, :, 6] = jm
                o[:, :, 7] = np.where(has_j, np.sqrt(_var(S[:, :, 8] / wj_safe, jm)), 0.0)
            parts[name] = o[g.pos]
        # Per decay: client (3), service (3), chan (8), sock (6) columns, as in _advanced_specs.
        out = np.concatenate([parts["client"], parts["service"], parts["chan"], parts["sock"]], axis=2)
        return out.reshape(n, L * 20)


def _var(mean_sq: np.ndarray, mean: np.ndarray) -> np.ndarray:
    v = mean_sq - mean * mean
    # E[x^2] - E[x]^2 cancels: treat relative noise below 1e-9 as zero so that results do not
    # depend on how the stream was batched.
    return np.where(v > 1e-9 * (mean * mean) + 1e-18, v, 0.0)


def _std(mean_sq: np.ndarray, mean: np.ndarray) -> np.ndarray:
    return np.sqrt(_var(mean_sq, mean))

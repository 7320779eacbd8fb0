"""Which end opened a conversation, remembered across reads (issue 12: attribution).

The feature state remembers each TCP/UDP conversation's opener (its SYN, or a UDP conversation's
first packet), so a connection's packets in later reads than its handshake, or a flood's replies,
name the right client whatever their ports; incidents orient their anomalies by it first.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from capture.models import Sensor
from capture.records import empty_records, ip_to_bytes
from detection import anomalies
from detection.features import LEVELS, FeatureExtractor, FeatureState, client_side
from detection.models import Incident
from tests.detection import test_incidents as helpers
from tests.detection.saved_states import as_npz

SYN, SYN_ACK, ACK, PSH_ACK = 0x02, 0x12, 0x10, 0x18
ATTACKER, VICTIM = "10.0.0.75", "10.0.0.1"


def _records(packets: list[tuple], t: float = 1000.0, step: float = 0.001) -> np.ndarray:
    """``(src, dst, sport, dport, proto, flags)`` per packet (for ICMP: sport, dport = type, code)."""
    records = empty_records(len(packets))
    records["ts"] = t + np.arange(len(packets)) * step
    for i, (src, dst, sport, dport, proto, flags) in enumerate(packets):
        records["ip_version"][i] = 4
        records["src_ip"][i] = np.frombuffer(ip_to_bytes(src), np.uint8)
        records["dst_ip"][i] = np.frombuffer(ip_to_bytes(dst), np.uint8)
        records["sport"][i], records["dport"][i], records["proto"][i] = sport, dport, proto
        records["tcp_flags"][i], records["length"][i] = flags, 100
    return records


def _handshake(sport: int = 36_001, dport: int = 40_404) -> list[tuple]:
    return [
        (ATTACKER, VICTIM, sport, dport, 6, SYN),
        (VICTIM, ATTACKER, dport, sport, 6, SYN_ACK),
        (ATTACKER, VICTIM, sport, dport, 6, ACK),
    ]


def _transfer(sport: int = 36_001, dport: int = 40_404) -> list[tuple]:
    """Data one way, acknowledgements back: both ports ephemeral, the opener's the lower one."""
    return [(ATTACKER, VICTIM, sport, dport, 6, PSH_ACK)] * 6 + [(VICTIM, ATTACKER, dport, sport, 6, ACK)] * 2


@pytest.mark.parametrize("level", LEVELS)
def test_a_connections_opener_is_remembered_across_reads_and_a_saved_state(level):
    extractor = FeatureExtractor(level)
    state = extractor.new_state()
    extractor.transform(_records(_handshake()), state)
    state = FeatureState.from_bytes(state.to_bytes())  # the worker saves it in Redis between reads
    later = _records(_transfer(), t=1001.0)
    _, _, opened = extractor.transform_opened(later, state)
    assert opened.tolist() == [1] * 6 + [0] * 2
    # the stateless guess names the higher port's end, the listener; the opener names the attacker
    assert not client_side(later)[:6].any()
    assert client_side(later, opened).tolist() == [True] * 6 + [False] * 2


def test_a_udp_conversations_first_sender_opens_it_and_unknown_handshakes_stay_guesses():
    extractor = FeatureExtractor("low")
    state = extractor.new_state()
    flood = [(ATTACKER, VICTIM, 2000 + k, 5353, 17, 0) for k in range(5)]
    extractor.transform(_records(flood), state)
    later = [(VICTIM, ATTACKER, 5353, 2000, 17, 0), (ATTACKER, VICTIM, 2000, 5353, 17, 0)]
    later += [(VICTIM, ATTACKER, 8081, 50_000, 6, PSH_ACK), (ATTACKER, VICTIM, 3, 3, 1, 0)]
    _, _, opened = extractor.transform_opened(_records(later, t=1001.0), state)
    # the reply answers the first sender; a connection whose SYN was not seen and ICMP: unknown
    assert opened.tolist() == [0, 1, -1, -1]


def test_openers_do_not_depend_on_how_the_stream_is_cut_into_reads():
    replies = [(VICTIM, ATTACKER, 5353, 1000 + k % 7, 17, 0) for k in range(40)]
    # then the same pair of sockets reused, opened from the other end
    reused = [(VICTIM, ATTACKER, 40_404, 36_001, 6, SYN), (ATTACKER, VICTIM, 36_001, 40_404, 6, SYN_ACK)]
    packets = [*_handshake(), *_transfer(), *replies, *_handshake(50_000, 8081), *reused]
    packets.append((VICTIM, ATTACKER, 40_404, 36_001, 6, ACK))
    records = _records(packets)
    extractor = FeatureExtractor("advanced")
    whole = extractor.transform_opened(records, extractor.new_state())[2]
    state = extractor.new_state()
    pieces = [extractor.transform_opened(records[lo : lo + 7], state)[2] for lo in range(0, len(records), 7)]
    assert np.concatenate(pieces).tolist() == whole.tolist()
    assert whole[-3:].tolist() == [1, 0, 1]  # the reused pair: its new SYN names its new opener


def test_the_opener_memory_is_bounded_and_forgets_idle_conversations():
    extractor = FeatureExtractor("low", max_keys=100)
    state = extractor.new_state()
    syns = [(ATTACKER, VICTIM, 1024 + k, 8081, 6, SYN) for k in range(1000)]  # a SYN flood: new pairs
    extractor.transform(_records(syns), state)
    assert len(state.openers.keys) == 100  # the most recent ones
    late = [(ATTACKER, VICTIM, 2023, 8081, 6, ACK), (ATTACKER, VICTIM, 1024, 8081, 6, ACK)]
    assert extractor.transform_opened(_records(late, t=1002.0), state)[2].tolist() == [1, -1]
    idle = [(ATTACKER, VICTIM, 2023, 8081, 6, ACK)]
    assert extractor.transform_opened(_records(idle, t=1002.0 + 601), state)[2].tolist() == [-1]
    assert len(state.openers.keys) == 0


def test_a_state_saved_before_openers_were_remembered_still_loads():
    extractor = FeatureExtractor("advanced")
    state = extractor.new_state()
    extractor.transform(_records(_handshake()), state)
    with np.load(io.BytesIO(as_npz(state))) as z:
        old = {name: z[name] for name in z.files if not name.startswith("openers_")}
    buf = io.BytesIO()
    np.savez(buf, **old)
    restored = FeatureState.from_bytes(buf.getvalue())
    assert restored.packets == 3 and len(restored.openers.keys) == 0


# -- incidents


def _save_read(
    sensor: Sensor, extractor: FeatureExtractor, state: FeatureState, packets: list, first_seq: int
):
    """Save a read whose every packet is an anomaly, its openers from the sensor's feature state."""
    batch, scored = helpers._read([(*p, 0) for p in packets], first_seq, helpers.T0 + first_seq)
    scored.opened = extractor.transform_opened(batch.records, state)[2]
    return anomalies.save_anomalies(sensor, batch, scored)


@pytest.mark.django_db
def test_a_transfer_between_two_ephemeral_ports_whose_syn_was_in_an_earlier_read_is_the_openers():
    sensor = Sensor.objects.create(name="inc")
    extractor = FeatureExtractor("low")
    state = extractor.new_state()
    extractor.transform(helpers._read([(*p, 0) for p in _handshake()], 1, helpers.T0)[0].records, state)
    _save_read(sensor, extractor, state, _transfer() * 5, 100)
    assert [i.entity for i in Incident.objects.all()] == [f"host {ATTACKER}"]
    assert Incident.objects.get().targets == [f"{VICTIM}:40404/tcp"]


@pytest.mark.django_db
def test_a_udp_floods_replies_and_the_icmp_unreachables_they_draw_are_the_flooders():
    sensor = Sensor.objects.create(name="inc")
    extractor = FeatureExtractor("low")
    state = extractor.new_state()
    flood = [(ATTACKER, VICTIM, 2000 + k, 5353, 17, 0) for k in range(50)]
    extractor.transform(helpers._read([(*p, 0) for p in flood], 1, helpers.T0)[0].records, state)
    # The victim's replies go to the flooder's ports, which answers each with a port unreachable.
    later = [(VICTIM, ATTACKER, 5353, 2000 + k % 2, 17, 0) for k in range(10)]
    later += [(ATTACKER, VICTIM, 3, 3, 1, 0) for _ in range(20)]
    _save_read(sensor, extractor, state, later, 100)
    assert [i.entity for i in Incident.objects.all()] == [f"host {ATTACKER}"]
    assert f"{VICTIM}:5353/udp" in Incident.objects.get().targets

"""An incident's evidence pcap: which of the sensor's packets are its, and whether their frames are kept.

The frames themselves are capture's (capture/evidence.py: the ring, the carving); detection only
knows which packets an incident is made of. They are the packets of its timeline
(detection.timeline): the sensor's stored packets within [first_seen, last_seen] (``TIME_SLACK``
beyond) with one of its sources or targets' hosts at either end, plus its anomalies' own packets
(a packet pruned from the database keeps its anomaly row). So the pcap holds the whole exchange
the operator sees charted, not only the packets that scored over the threshold.
"""

from __future__ import annotations

import numpy as np
from django.conf import settings
from django.db.models import Max, Q

from capture import evidence
from capture.models import Packet
from detection.models import Anomaly, Incident
from detection.timeline import TIME_SLACK, incident_hosts


def incident_seqs(incident: Incident) -> np.ndarray:
    """The sequence numbers of its packets (sorted, unique)."""
    sources, targets = incident_hosts(incident)
    hosts = [*sources, *targets]
    own = Anomaly.objects.filter(incident=incident).values_list("packet_seq", flat=True)
    seqs = [np.fromiter(own, np.uint64)]
    if hosts:
        rows = Packet.objects.filter(
            sensor_id=incident.sensor_id,
            ts__gte=incident.first_seen - TIME_SLACK,
            ts__lte=max(incident.last_seen, incident.first_seen) + TIME_SLACK,
        ).filter(Q(src_ip__in=hosts) | Q(dst_ip__in=hosts))
        seqs.append(np.fromiter(rows.values_list("seq", flat=True).iterator(chunk_size=20000), np.uint64))
    return np.unique(np.concatenate(seqs))


def incident_pcap(incident: Incident) -> evidence.Selection:
    """Its frames still in the ring (raises capture.evidence.EvidenceGone with the reason)."""
    return evidence.select(settings.NETMON_EVIDENCE_DIR, incident.sensor.name, seqs=incident_seqs(incident))


def pcap_kept(incident: Incident) -> bool:
    """Whether its newest anomaly's frame may still be kept (cheap: no index is read; for the button)."""
    newest = Anomaly.objects.filter(incident=incident).aggregate(seq=Max("packet_seq"))["seq"]
    if newest is None:
        return False
    return evidence.kept(settings.NETMON_EVIDENCE_DIR, incident.sensor.name, [newest])

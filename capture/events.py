"""Publishing to WebSocket clients from outside a consumer (capture process, Celery tasks, views).

Everything goes through the channel layer's ``group_send``; a full client channel drops the
message for that client only (channels-redis), so a slow dashboard never slows the sender.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

GROUP_PACKETS = "netmon.packets"
GROUP_STATS = "netmon.stats"
GROUP_ANOMALIES = "netmon.anomalies"
GROUP_CONTROL = "netmon.control"


def export_group(user_id: int) -> str:
    """Each user's export events go to their own group: nobody sees another user's jobs."""
    return f"netmon.exports.user.{user_id}"


def broadcast(group: str, message: dict[str, Any]) -> bool:
    """Send ``message`` (with a dotted ``type``) to every consumer in ``group``; False if the layer failed."""
    layer = get_channel_layer()
    if layer is None:
        return False
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception as exc:  # a dead Redis must not break capture or a task
        log.warning("broadcast to %s failed: %s", group, exc)
        return False
    return True

"""Publishing to WebSocket clients from outside a consumer (capture process, Celery tasks, views).

Everything goes through the channel layer's ``group_send``; a full client channel drops the
message for that client only (channels-redis), so a slow dashboard never slows the sender.

Producers are synchronous code. ``async_to_sync(group_send)`` would start an event loop, open a
Redis connection, send and close it again for every message (over 10 ms each, paid by the capture
reporter and by the ingest task for every anomaly). Instead each process keeps one event loop in a
daemon thread with its own Redis channel layer, so its connections are reused (well under 1 ms).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

from asgiref.sync import async_to_sync
from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers, get_channel_layer

log = logging.getLogger(__name__)

GROUP_PACKETS = "netmon.packets"
GROUP_STATS = "netmon.stats"
GROUP_ANOMALIES = "netmon.anomalies"
GROUP_INCIDENTS = "netmon.incidents"
GROUP_CONTROL = "netmon.control"
BROADCAST_TIMEOUT = 5.0  # seconds a producer waits for Redis before giving the message up


def export_group(user_id: int) -> str:
    """Each user's export events go to their own group: nobody sees another user's jobs."""
    return f"netmon.exports.user.{user_id}"


class _Sender:
    """An event loop in a daemon thread and a channel layer of its own, for one process."""

    def __init__(self, shared_layer: Any) -> None:
        self.pid = os.getpid()
        self.shared_layer = shared_layer
        # A separate instance: its connection pools belong to this loop only, so code that closes
        # the shared layer's pools from another loop (tests, consumers) never touches them.
        self.layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="netmon-broadcast", daemon=True)
        self.thread.start()

    def usable(self, shared_layer: Any) -> bool:
        # A forked child (Celery prefork) has the object but not the thread; new settings, new layer.
        return self.pid == os.getpid() and self.thread.is_alive() and self.shared_layer is shared_layer


_sender: _Sender | None = None
_sender_lock = threading.Lock()


def _sender_for(layer: Any) -> _Sender:
    global _sender
    with _sender_lock:
        if _sender is None or not _sender.usable(layer):
            _sender = _Sender(layer)
        return _sender


BATCH_TYPE = "events.batch"  # several messages to one group in one send (``broadcast_many``)


def broadcast_many(group: str, messages: list[dict[str, Any]], timeout: float = BROADCAST_TIMEOUT) -> bool:
    """Send ``messages`` to ``group`` in one ``group_send`` (one message alone goes as it is).

    A read's anomalies and incidents are news of one moment: sent one by one they cost a round
    trip each (most of a small read's publishing under attack). Consumers take the batch apart and
    handle each message as if it had come alone (``netmon.consumers``, ``events_batch``).
    """
    if not messages:
        return True
    if len(messages) == 1:
        return broadcast(group, messages[0], timeout)
    return broadcast(group, {"type": BATCH_TYPE, "messages": messages}, timeout)


def _shares_state_across_instances(layer: Any) -> bool:
    """Redis-backed layers: a second instance reaches the same groups. The in-memory one does not."""
    return type(layer).__module__.startswith("channels_redis.")


def broadcast(group: str, message: dict[str, Any], timeout: float = BROADCAST_TIMEOUT) -> bool:
    """Send ``message`` (with a dotted ``type``) to every consumer in ``group``; False if the layer failed.

    Blocks until Redis accepted the message (or ``timeout``). Call it from synchronous code only:
    async code awaits ``get_channel_layer().group_send`` itself.
    """
    layer = get_channel_layer()
    if layer is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        log.warning("broadcast to %s from a running event loop: await group_send instead", group)
        return False
    try:
        if not _shares_state_across_instances(layer):
            async_to_sync(layer.group_send)(group, message)
            return True
        sender = _sender_for(layer)
        future = asyncio.run_coroutine_threadsafe(sender.layer.group_send(group, message), sender.loop)
        try:
            future.result(timeout)
        except BaseException:
            future.cancel()
            raise
    except Exception as exc:  # a dead Redis must not break capture or a task
        log.warning("broadcast to %s failed: %s", group, exc)
        return False
    return True

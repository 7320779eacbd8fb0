"""Publishing record batches to the sensor's Redis stream, one entry per batch, through Redis outages.

``StreamPublisher(sensor, url=... or client=..., buffer_size=..., batch_size=..., on_published=...)``
(without ``client`` it opens its own ``capture.connections.fail_fast_client(url)``):

- ``publish(batch)`` queues a ``Batch`` (capture/records.py) and sends what is queued when Redis
  is not in a back-off pause: one ``XADD netmon:stream:<sensor> MAXLEN ~ <max_entries> * h .. r ..``
  per batch, several batches per round trip (a non-transactional pipeline) when more than one
  is waiting. It never blocks for long: while Redis is down it only queues.
- ``flush(timeout) -> bool`` keeps trying (with the back-off) until the queue is empty or the
  timeout passes; ``close(timeout)`` flushes, then counts whatever is left as dropped.
- Under failure batches stay in memory, bounded by ``buffer_size`` packets in total; beyond that
  the OLDEST batches are dropped and their packets counted in ``dropped[reason]``
  (``"redis unavailable"``, or ``"redis error"`` when Redis answered with an error). Retries back
  off exponentially from ``backoff_initial`` to ``backoff_max`` seconds.
- Counters: ``published_packets``, ``published_batches``, ``dropped`` (Counter by reason),
  ``reconnects`` (recoveries after a failure), ``round_trips``; ``stats()`` returns them all.
- ``on_published(sensor, entry_id, batch)`` is called after each batch is in the stream (the
  capture runner counts it, trims the stream and enqueues the ingest task there). Its exceptions
  are logged, never raised.

The first entry published after the publisher dropped batches carries one more field,
``dropped_before`` (``DROPPED_FIELD``, a decimal count): the packets it dropped since its previous
entry. They already count in ``dropped``, so the reader must not count that gap in ``seq`` again.

Delivery is at least once: if the connection breaks during a pipeline, the batches of that round
trip are sent again and may appear twice (their ``seq`` ranges tell the reader).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import redis

from capture.connections import fail_fast_client
from capture.records import STREAM_PREFIX, Batch, encode_batch, stream_key

__all__ = ["DROPPED_FIELD", "DROP_ERROR", "DROP_UNAVAILABLE", "StreamPublisher"]

log = logging.getLogger(__name__)

DROP_UNAVAILABLE = "redis unavailable"
DROP_ERROR = "redis error"
MIN_ENTRIES = 16
DROPPED_FIELD = b"dropped_before"  # stream entry field: packets this publisher dropped just before it

OnPublished = Callable[[str, str, Batch], Any]


class StreamPublisher:
    """Puts batches into ``netmon:stream:<sensor>`` and keeps them in memory while Redis is away."""

    def __init__(
        self,
        sensor: str,
        *,
        url: str = "redis://127.0.0.1:6379/0",
        client: redis.Redis | None = None,
        buffer_size: int = 200_000,
        batch_size: int = 4096,
        max_entries: int | None = None,
        key_prefix: str = STREAM_PREFIX,
        on_published: OnPublished | None = None,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        max_pipeline: int = 32,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if buffer_size < 1 or batch_size < 1:
            raise ValueError("buffer_size and batch_size must be positive")
        self.sensor = sensor
        self.key = stream_key(sensor, key_prefix)
        self._owns_client = client is None
        self.client = client if client is not None else fail_fast_client(url)
        self.buffer_size = buffer_size
        # the stream holds about as many packets as the in-memory buffer may
        self.max_entries = max_entries or max(MIN_ENTRIES, math.ceil(buffer_size / batch_size))
        self.on_published = on_published
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_pipeline = max(1, max_pipeline)
        self._clock = clock
        self._sleep = sleep
        self._queue: deque[Batch] = deque()
        self._queued_packets = 0
        self._delay = 0.0  # current back-off; 0 while healthy
        self._next_attempt = 0.0
        self._failing = False
        self._last_failure_kind = DROP_UNAVAILABLE
        self.published_packets = 0
        self.published_batches = 0
        self.dropped: Counter[str] = Counter()
        self._dropped_unannounced = 0  # dropped since the last entry published (told with the next)
        self.reconnects = 0
        self.failures = 0
        self.round_trips = 0
        self.callback_errors = 0
        self.last_error = ""

    # -- state -------------------------------------------------------------------------------

    @property
    def pending_batches(self) -> int:
        return len(self._queue)

    @property
    def pending_packets(self) -> int:
        return self._queued_packets

    @property
    def connected(self) -> bool:
        """False from a failed attempt until the next successful one."""
        return not self._failing

    @property
    def retry_in(self) -> float:
        """Seconds until the next attempt is allowed (0 when healthy)."""
        return max(0.0, self._next_attempt - self._clock()) if self._failing else 0.0

    def stats(self) -> dict[str, Any]:
        return {
            "published_packets": self.published_packets,
            "published_batches": self.published_batches,
            "dropped": dict(self.dropped),
            "dropped_packets": sum(self.dropped.values()),
            "reconnects": self.reconnects,
            "failures": self.failures,
            "round_trips": self.round_trips,
            "pending_packets": self._queued_packets,
            "pending_batches": len(self._queue),
            "connected": self.connected,
            "last_error": self.last_error,
            "max_entries": self.max_entries,
        }

    # -- publishing --------------------------------------------------------------------------

    def publish(self, batch: Batch) -> None:
        """Queue ``batch`` and send whatever is queued, unless Redis is in a back-off pause."""
        if len(batch.records) == 0:
            return
        self._queue.append(batch)
        self._queued_packets += len(batch.records)
        self._enforce_bound()
        self._try_send()

    def flush(self, timeout: float = 5.0) -> bool:
        """Send until nothing is queued (True) or ``timeout`` seconds pass (False)."""
        deadline = self._clock() + timeout
        while True:
            self._try_send()
            if not self._queue:
                return True
            now = self._clock()
            if now >= deadline:
                return False
            self._sleep(max(0.001, min(deadline, self._next_attempt) - now))

    def close(self, timeout: float = 5.0) -> bool:
        """Flush, count anything still queued as dropped, release the connection."""
        done = self.flush(timeout)
        while self._queue:
            self._drop_oldest(self._last_failure_kind)
        if self._owns_client:
            with contextlib.suppress(redis.RedisError):  # nothing useful to do about a failed disconnect
                self.client.close()
        return done

    def _enforce_bound(self) -> None:
        # keep at least the newest batch even if it alone exceeds the bound
        while self._queued_packets > self.buffer_size and len(self._queue) > 1:
            self._drop_oldest(self._last_failure_kind if self._failing else DROP_UNAVAILABLE)

    def _drop_oldest(self, reason: str) -> None:
        batch = self._queue.popleft()
        n = len(batch.records)
        self._queued_packets -= n
        self.dropped[reason] += n
        self._dropped_unannounced += n

    def _try_send(self) -> None:
        while self._queue:
            if self._failing and self._clock() < self._next_attempt:
                return
            if not self._send_some():
                return

    def _send_some(self) -> bool:
        """One round trip with up to ``max_pipeline`` batches; False when it failed."""
        chunk = [self._queue[i] for i in range(min(self.max_pipeline, len(self._queue)))]
        pipe = self.client.pipeline(transaction=False)
        now = time.time()
        announced = self._dropped_unannounced
        for i, batch in enumerate(chunk):
            batch.published_at = now
            fields = encode_batch(batch)
            if i == 0 and announced:
                fields[DROPPED_FIELD] = str(announced).encode()
            pipe.xadd(self.key, fields, maxlen=self.max_entries, approximate=True)
        try:
            self.round_trips += 1
            results = pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._failed(exc, DROP_UNAVAILABLE)
            return False
        except redis.RedisError as exc:
            self._failed(exc, DROP_ERROR)
            return False
        finally:
            pipe.reset()
        for batch, result in zip(chunk, results, strict=True):
            if isinstance(result, Exception):
                # later batches of this round trip may be in the stream already; this one is retried
                self._failed(result, DROP_ERROR)
                return False
            self._queue.popleft()
            if batch is chunk[0]:
                self._dropped_unannounced -= announced
            n = len(batch.records)
            self._queued_packets -= n
            self.published_packets += n
            self.published_batches += 1
            self._succeeded()
            self._notify(result, batch)
        return True

    def _succeeded(self) -> None:
        if self._failing:
            self.reconnects += 1
            log.info("redis stream %s reachable again; %d batches queued", self.key, len(self._queue))
        self._failing = False
        self._delay = 0.0

    def _failed(self, exc: Exception, kind: str) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if not self._failing:
            log.warning("publishing to %s failed (%s); buffering", self.key, self.last_error)
        self._failing = True
        self._last_failure_kind = kind
        self._delay = self.backoff_initial if self._delay == 0 else min(self._delay * 2, self.backoff_max)
        self._next_attempt = self._clock() + self._delay

    def _notify(self, entry_id: bytes | str, batch: Batch) -> None:
        if self.on_published is None:
            return
        entry = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        try:
            self.on_published(self.sensor, entry, batch)
        except Exception:  # a failing hook must not lose or re-send data already in the stream
            self.callback_errors += 1
            log.exception("on_published hook failed for %s entry %s", self.key, entry)

"""This process's Redis client: one connection pool per process, shared by every caller in it.

Redis carries the capture streams, the control keys, the ingest state and sealed export
passphrases (the Celery broker and the channel layer bring their own clients). Web requests,
Celery tasks and the capture command all take their client from ``redis_client()``.

A client per call opened a connection per call and left its pool behind in reference cycles
(redis-py's pools reference themselves through their event listeners) that only the cyclic
garbage collector frees (netmon/celery.py). The client is keyed by pid (a forked pool process
makes its own) and URL (tests change settings).

The capture process uses ``fail_fast_client``: the stream publisher retries with its own back-off
and must never block on redis-py's retries (one refused connection would cost seconds).
"""

from __future__ import annotations

import os
import threading

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

_client: tuple[int, str, redis.Redis] | None = None  # (pid, url, client) of this process
_client_lock = threading.Lock()


def redis_client() -> redis.Redis:
    """This process's client for ``settings.REDIS_URL`` (created on first use)."""
    global _client
    pid, url = os.getpid(), settings.REDIS_URL
    current = _client
    if current is None or current[0] != pid or current[1] != url:
        with _client_lock:
            current = _client
            if current is None or current[0] != pid or current[1] != url:
                client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=3)
                _client = current = (pid, url, client)
    return current[2]


def fail_fast_client(url: str, connect_timeout: float = 1.0, timeout: float = 5.0) -> redis.Redis:
    """A client without redis-py's retries, for a caller that does its own retrying and back-off."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )

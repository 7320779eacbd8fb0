"""Prometheus metrics at /metrics, read from the database and Redis at scrape time.

Nothing is counted in this process: the capture processes and the workers already keep durable
counters (``capture.models.Sensor``) and Redis holds the streams, so a scrape of any web process
sees the same numbers as ``/api/status``, whichever process served it, restarts included.

Access: the path is local-only (``netmon.middleware.LocalOnlyMiddleware``), and the view also
wants either a logged-in staff user (session, or an API token of a staff user) or
``Authorization: Bearer <NETMON_METRICS_TOKEN>`` (from the environment; unset: no bearer access).
A Prometheus job for it::

    - job_name: netmon
      metrics_path: /metrics
      authorization: {type: Bearer, credentials_file: /run/secrets/netmon_metrics_token}
      static_configs: [{targets: ["127.0.0.1:8000"]}]

Metrics (all ``netmon_`` prefixed; ``sensor`` label per capture sensor):

- ``sensor_packets_{captured,published,stored,scored,undecodable}_total``, ``sensor_packets_dropped_total``
  by ``stage`` (``capture``: over ``buffer_size`` while Redis was away; ``stream``: trimmed from or
  lost with Redis before a worker stored it): stored + dropped = captured once the queue is empty;
- ``sensor_queue_lag_packets`` (published, not yet ingested), ``sensor_stream_entries`` and
  ``sensor_stream_pending_entries`` (read by a worker, not yet acknowledged);
- ``sensor_evidence_up`` (state, reason), ``sensor_evidence_bytes``,
  ``sensor_evidence_frames_not_kept_total``: the evidence ring, from the heartbeat;
- ``sensor_up`` (a heartbeat in the last few seconds), ``sensor_info`` (mode, state),
  ``sensor_last_heartbeat_timestamp_seconds``;
- ``anomalies_stored`` by sensor and ``false_positive``, ``anomalies_last_hour``;
- ``export_jobs`` by ``status``; ``detection_model_active`` by kind and version;
- ``notifications`` by ``destination`` and ``status`` (sent, failed, retrying, rate_limited, ...) and
  ``notification_failed_attempts_total`` by ``destination`` (README "Notifications");
- ``siem_lines_total`` by ``sink`` and ``outcome``: EVE lines the SIEM output wrote, failed to
  write (an unreachable syslog, an unwritable file) or dropped (detection/siem.py);
- ``celery_queue_messages`` (tasks waiting in the broker), ``redis_up``, ``database_up``,
  ``scrape_duration_seconds``.

Scoring latency is not exposed: no process records it durably yet (the ingest only returns it).
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import redis
from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from capture.connections import redis_client

log = logging.getLogger(__name__)

TOKEN_ENV = "NETMON_METRICS_TOKEN"  # noqa: S105 - the variable's name, not a secret


class NetmonCollector:
    """Reads the current values from the database and Redis on every scrape."""

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration: that would query the database at import time

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        client, redis_ok = self._redis_client()
        yield GaugeMetricFamily("netmon_redis_up", "1 if Redis answered this scrape.", value=int(redis_ok))
        heartbeats = self._heartbeats(client) if redis_ok else {}
        try:
            db_metrics = list(self._database_metrics(heartbeats))
            db_ok = True
        except Exception as exc:  # the database is down: report that, and what Redis still knows
            log.warning("metrics: database unavailable: %s", exc)
            db_metrics, db_ok = [], False
        yield GaugeMetricFamily("netmon_database_up", "1 if the database answered.", value=int(db_ok))
        yield from db_metrics
        if redis_ok:
            yield from self._redis_metrics(client)
            client.close()
        yield GaugeMetricFamily(
            "netmon_scrape_duration_seconds",
            "Time spent gathering these metrics.",
            value=time.perf_counter() - started,
        )

    # --- Redis -------------------------------------------------------------------------------------
    @staticmethod
    def _redis_client() -> tuple[redis.Redis | None, bool]:
        try:
            client = redis_client()
            client.ping()
        except Exception as exc:
            log.warning("metrics: Redis unavailable: %s", exc)
            return None, False
        return client, True

    @staticmethod
    def _heartbeats(client: redis.Redis) -> dict[str, dict[str, Any]]:
        from capture import control

        try:
            return control.read_heartbeats(client)
        except Exception:
            return {}

    def _redis_metrics(self, client: redis.Redis) -> Iterator[Metric]:
        from capture.records import stream_key
        from detection import ingest

        length = GaugeMetricFamily(
            "netmon_sensor_stream_entries", "Batches in the sensor's Redis stream.", labels=["sensor"]
        )
        pending = GaugeMetricFamily(
            "netmon_sensor_stream_pending_entries",
            "Batches a worker read but has not acknowledged yet.",
            labels=["sensor"],
        )
        try:
            for sensor in sorted(ingest.known_sensors(client)):
                key = stream_key(sensor)
                length.add_metric([sensor], client.xlen(key))
                try:
                    pending.add_metric([sensor], int(client.xpending(key, ingest.GROUP)["pending"]))
                except redis.ResponseError:  # no consumer group yet
                    pending.add_metric([sensor], 0)
        except redis.RedisError as exc:
            log.warning("metrics: reading the streams failed: %s", exc)
        yield length
        yield pending
        queue = GaugeMetricFamily(
            "netmon_celery_queue_messages", "Tasks waiting in the broker's queue.", labels=["queue"]
        )
        broker = getattr(settings, "CELERY_BROKER_URL", "") or ""
        if broker.startswith(("redis://", "rediss://", "unix://")):
            try:
                with redis.Redis.from_url(
                    broker, socket_timeout=2, socket_connect_timeout=1
                ) as broker_client:
                    for name in (settings.CELERY_TASK_DEFAULT_QUEUE, settings.EXPORT_QUEUE):
                        queue.add_metric([name], broker_client.llen(name))
            except redis.RedisError as exc:
                log.warning("metrics: reading the task queue failed: %s", exc)
        yield queue
        yield self._siem_metric(client)

    @staticmethod
    def _siem_metric(client: redis.Redis) -> Metric:
        from detection import siem

        lines = CounterMetricFamily(
            "netmon_siem_lines",
            "SIEM output (EVE) lines by sink (file, syslog-udp, syslog-tcp; queue: over the writer's bound, "
            "format: lines that could not be made) and outcome (written, failed, dropped).",
            labels=["sink", "outcome"],
        )
        try:
            counts = client.hgetall(siem.COUNTERS_KEY)
        except redis.RedisError as exc:
            log.warning("metrics: reading the SIEM counters failed: %s", exc)
            counts = {}
        for key, value in sorted(counts.items()):
            sink, _, outcome = key.decode().partition(":")
            lines.add_metric([sink, outcome], int(value))
        return lines

    # --- database ----------------------------------------------------------------------------------
    def _database_metrics(self, heartbeats: dict[str, dict[str, Any]]) -> Iterator[Metric]:
        from capture.models import Sensor

        def counter(name: str, doc: str, labels: tuple[str, ...] = ("sensor",)) -> CounterMetricFamily:
            return CounterMetricFamily(f"netmon_sensor_packets_{name}", doc, labels=list(labels))

        captured = counter("captured", "Packets read by the capture process.")
        published = counter("published", "Packets put into the Redis stream.")
        stored = counter("stored", "Packets stored by the workers.")
        scored = counter("scored", "Packets scored by an anomaly model.")
        undecodable = counter("undecodable", "Packets decoded only partly (stored all the same).")
        dropped = counter(
            "dropped",
            "Packets lost: 'capture' over buffer_size while Redis was away, 'stream' trimmed or lost "
            "with Redis before a worker stored them.",
            ("sensor", "stage"),
        )
        lag = GaugeMetricFamily(
            "netmon_sensor_queue_lag_packets", "Packets published but not yet ingested.", labels=["sensor"]
        )
        up = GaugeMetricFamily(
            "netmon_sensor_up",
            "1 if the sensor's capture process sent a heartbeat lately.",
            labels=["sensor"],
        )
        info = GaugeMetricFamily(
            "netmon_sensor_info",
            "The sensor's capture mode and state (value 1).",
            labels=["sensor", "mode", "state"],
        )
        heartbeat = GaugeMetricFamily(
            "netmon_sensor_last_heartbeat_timestamp_seconds",
            "When the capture process last wrote its counters.",
            labels=["sensor"],
        )
        evidence_up = GaugeMetricFamily(
            "netmon_sensor_evidence_up",
            "1 if capture keeps evidence frames, 0 if its ring is off or failing (full, unwritable).",
            labels=["sensor", "state", "reason"],
        )
        evidence_bytes = GaugeMetricFamily(
            "netmon_sensor_evidence_bytes", "Bytes in the sensor's evidence ring.", labels=["sensor"]
        )
        evidence_lost = CounterMetricFamily(
            "netmon_sensor_evidence_frames_not_kept",
            "Frames the evidence ring could not keep since the capture process started.",
            labels=["sensor"],
        )
        for sensor in Sensor.objects.order_by("name"):
            name = sensor.name
            live = heartbeats.get(name) or {}
            ring = live.get("evidence")
            if ring:
                evidence_up.add_metric([name, ring["state"], ring["reason"]], int(ring["state"] == "on"))
                evidence_bytes.add_metric([name], ring["bytes"])
                evidence_lost.add_metric([name], ring["frames_not_kept"])
            captured.add_metric([name], max(sensor.packets_read, live.get("packets_read", 0)))
            published.add_metric([name], max(sensor.packets_published, live.get("packets_published", 0)))
            stored.add_metric([name], sensor.packets_stored)
            scored.add_metric([name], sensor.packets_scored)
            undecodable.add_metric(
                [name], max(sensor.packets_undecodable, live.get("packets_undecodable", 0))
            )
            dropped.add_metric([name, "capture"], sensor.packets_dropped_capture)
            dropped.add_metric([name, "stream"], sensor.packets_dropped_stream)
            lag.add_metric([name], max(0, sensor.last_seq_published - sensor.last_seq_ingested))
            up.add_metric([name], int(bool(live)))
            state = live.get("state", sensor.state if live else Sensor.State.EXITED)
            info.add_metric([name, live.get("mode", sensor.mode), state], 1)
            if sensor.last_heartbeat:
                heartbeat.add_metric([name], sensor.last_heartbeat.timestamp())
        yield from (captured, published, stored, scored, undecodable, dropped, lag, up, info, heartbeat)
        yield from (evidence_up, evidence_bytes, evidence_lost)
        yield from self._detection_metrics()
        yield from self._export_metrics()
        yield from self._notification_metrics()

    @staticmethod
    def _detection_metrics() -> Iterator[Metric]:
        from datetime import timedelta

        from django.utils import timezone

        from detection.models import Anomaly, DetectionModel

        anomalies = GaugeMetricFamily(
            "netmon_anomalies_stored",
            "Anomalies stored, by sensor and whether a user marked them false positives.",
            labels=["sensor", "false_positive"],
        )
        rows = Anomaly.objects.values("sensor__name", "false_positive").annotate(n=Count("id")).order_by()
        for row in rows:
            anomalies.add_metric([row["sensor__name"], str(row["false_positive"]).lower()], row["n"])
        yield anomalies
        since = timezone.now() - timedelta(hours=1)
        yield GaugeMetricFamily(
            "netmon_anomalies_last_hour",
            "Anomalies (not false positives) seen in the last hour.",
            value=Anomaly.objects.filter(ts__gte=since, false_positive=False).count(),
        )
        active = GaugeMetricFamily(
            "netmon_detection_model_active",
            "The active detection model of each kind (value 1).",
            labels=["kind", "version", "feature_level"],
        )
        for model in DetectionModel.objects.filter(is_active=True).order_by("kind"):
            active.add_metric([model.kind, str(model.version), model.feature_level], 1)
        yield active

    @staticmethod
    def _export_metrics() -> Iterator[Metric]:
        from exports.models import ExportJob

        jobs = GaugeMetricFamily("netmon_export_jobs", "Export jobs by status.", labels=["status"])
        counts = dict(ExportJob.objects.values_list("status").annotate(n=Count("id")).order_by())
        for status in ExportJob.Status.values:
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs

    @staticmethod
    def _notification_metrics() -> Iterator[Metric]:
        from django.db.models import Sum

        from alerts.models import Delivery, Destination

        deliveries = GaugeMetricFamily(
            "netmon_notifications",
            "Incident notifications by destination and status "
            "(rate_limited: dropped over the destination's rate).",
            labels=["destination", "status"],
        )
        failed = CounterMetricFamily(
            "netmon_notification_failed_attempts",
            "Attempts at sending a notification that failed (each is retried with back-off until the last).",
            labels=["destination"],
        )
        names = dict(Destination.objects.values_list("pk", "name"))
        counts: dict[int, dict[str, int]] = {pk: {} for pk in names}
        attempts: dict[int, int] = dict.fromkeys(names, 0)
        rows = Delivery.objects.values("destination_id", "status").annotate(
            n=Count("id"), tries=Sum("attempts")
        )
        for row in rows.order_by():
            counts.setdefault(row["destination_id"], {})[row["status"]] = row["n"]
            attempts[row["destination_id"]] = attempts.get(row["destination_id"], 0) + (row["tries"] or 0)
        for pk, by_status in counts.items():
            name = names.get(pk, str(pk))
            for status in Delivery.Status.values:
                deliveries.add_metric([name, status], by_status.get(status, 0))
            # every attempt failed but the one that sent it (a row being sent: its try is not failed yet)
            in_flight = by_status.get(Delivery.Status.SENT, 0) + by_status.get(Delivery.Status.SENDING, 0)
            failed.add_metric([name], max(attempts.get(pk, 0) - in_flight, 0))
        yield deliveries
        yield failed


registry = CollectorRegistry(auto_describe=False)
registry.register(NetmonCollector())


# --- the view ------------------------------------------------------------------------------------------
def configured_token() -> str:
    return getattr(settings, TOKEN_ENV, "") or os.environ.get(TOKEN_ENV, "")


def _bearer_ok(request: HttpRequest) -> bool:
    expected = configured_token()
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # Compared as UTF-8 bytes: compare_digest refuses non-ASCII str (a TypeError, so a 500).
    return (
        bool(expected)
        and scheme.lower() == "bearer"
        and hmac.compare_digest(given.strip().encode(), expected.encode())
    )


def _staff_user(request: HttpRequest):
    """A staff user from the session, or from an API token (``Authorization: Token <key>``)."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return user
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "token" and key.strip():
        from netmon.auth import valid_token_user

        return valid_token_user(key.strip())
    return None


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics: the Prometheus text format (OpenMetrics when the scraper asks for it)."""
    if not _bearer_ok(request):
        user = _staff_user(request)
        if user is None:
            response = HttpResponse("authentication required\n", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="netmon metrics"'
            return response
        if not (user.is_active and user.is_staff):
            return HttpResponse("staff only\n", status=403, content_type="text/plain")
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(registry), content_type=content_type)

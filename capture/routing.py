"""Capture's WebSocket routes (included by netmon/routing.py)."""

from __future__ import annotations

from django.urls import path

from capture.consumers import MonitorConsumer

websocket_urlpatterns = [path("ws/monitor/", MonitorConsumer.as_asgi())]

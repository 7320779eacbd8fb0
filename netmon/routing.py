"""WebSocket routes: the project-wide live-monitoring socket (netmon/consumers.py)."""

from __future__ import annotations

from django.urls import path

from netmon.consumers import MonitorConsumer

websocket_urlpatterns: list = [path("ws/monitor/", MonitorConsumer.as_asgi())]

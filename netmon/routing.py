"""WebSocket routes: each app's consumers under /ws/."""

from __future__ import annotations

from capture.routing import websocket_urlpatterns as capture_websocket_urlpatterns

websocket_urlpatterns: list = [*capture_websocket_urlpatterns]

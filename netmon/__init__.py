"""The Netmon project package: settings, ASGI/HTTP/WebSocket routing, the Celery app."""

from netmon.celery import app as celery_app

__all__ = ["celery_app"]

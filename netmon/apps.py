"""The project itself as an app: templates, static files, project-wide commands and auth receivers."""

from django.apps import AppConfig


class NetmonConfig(AppConfig):
    name = "netmon"

    def ready(self) -> None:
        from netmon.auth import connect_signals

        connect_signals()

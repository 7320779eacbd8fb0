"""The project itself as an app: templates, static files and project-wide commands."""

from django.apps import AppConfig


class NetmonConfig(AppConfig):
    name = "netmon"

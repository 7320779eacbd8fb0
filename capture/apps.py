"""App configuration for capture."""

from django.apps import AppConfig


class CaptureConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "capture"

    def ready(self) -> None:
        from capture import geo

        # A configured .mmdb that is missing or corrupt is said at start-up (logged as an error),
        # and turns lookups off: it does not stop the process.
        geo.check_configuration()

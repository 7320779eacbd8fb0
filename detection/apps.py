"""App configuration for detection: adds the model-kind check to the configuration's validator."""

from django.apps import AppConfig


class DetectionConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "detection"

    def ready(self) -> None:
        from capture import services as capture_services
        from detection.services import check_model_kind

        # ml_model naming a kind with no active model would silently stop detection: the one
        # validator (API, WebSocket, admin, services) refuses it.
        capture_services.add_config_check(check_model_kind)

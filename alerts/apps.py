"""App configuration for alerts; at start-up, a warning names each NETMON_NOTIFY_URLS entry apprise
cannot parse."""

from __future__ import annotations

import logging

from django.apps import AppConfig
from django.conf import settings

log = logging.getLogger("alerts")


class AlertsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "alerts"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from alerts.validation import split_urls, url_problem

        # Every process says so at start (web, workers): the operator sees it wherever they look.
        # The URL is skipped when sending (alerts.services.sync_settings_destinations).
        for url in split_urls(settings.NETMON_NOTIFY_URLS):
            if (problem := url_problem(url)) is not None:
                log.warning("NETMON_NOTIFY_URLS: %s; it is skipped", problem)

"""Admin pages: notification destinations (an admin's own, and those of NETMON_NOTIFY_URLS, read-only)
and the deliveries made to them (status, attempts, last error), read-only."""

from __future__ import annotations

from django.contrib import admin

from alerts.models import Delivery, Destination


@admin.register(Destination)
class DestinationAdmin(admin.ModelAdmin):
    # The URL field's validator (alerts.validation) refuses what apprise cannot parse, naming it.
    list_display = ("name", "redacted_url", "min_severity", "enabled", "from_settings", "sent", "failed")
    list_filter = ("enabled", "min_severity", "from_settings")
    search_fields = ("name",)

    @admin.display(description="URL (secrets hidden)")
    def redacted_url(self, obj: Destination) -> str:
        return obj.redacted_url

    @admin.display(description="sent")
    def sent(self, obj: Destination) -> int:
        return obj.deliveries.filter(status=Delivery.Status.SENT).count()

    @admin.display(description="failed")
    def failed(self, obj: Destination) -> int:
        return obj.deliveries.filter(status=Delivery.Status.FAILED).count()

    def get_readonly_fields(self, request, obj=None):
        # NETMON_NOTIFY_URLS owns its rows: change the variable, not the row (it is synced back).
        if obj is not None and obj.from_settings:
            return ("name", "redacted_url", "min_severity", "enabled", "from_settings")
        return ("from_settings",)

    def get_fields(self, request, obj=None):
        if obj is not None and obj.from_settings:
            return ("name", "redacted_url", "min_severity", "enabled", "from_settings")
        return ("name", "url", "min_severity", "enabled")

    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.from_settings:
            return False
        return super().has_delete_permission(request, obj)


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "destination", "incident", "severity", "event", "status", "attempts",
                    "sent_at", "error")  # fmt: skip
    list_filter = ("status", "event", "severity", "destination")
    list_select_related = ("destination", "incident")
    readonly_fields = [f.name for f in Delivery._meta.fields]
    search_fields = ("error",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

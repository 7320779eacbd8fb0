"""Admin pages for model versions (activate), anomalies (mark false positive) and incidents (status)."""

from __future__ import annotations

from django.contrib import admin, messages

from capture.choices import IncidentStatus
from detection import services
from detection.models import Anomaly, DetectionModel, Incident


@admin.register(DetectionModel)
class DetectionModelAdmin(admin.ModelAdmin):
    list_display = ("kind", "version", "feature_level", "status", "is_active", "packet_count", "threshold",
                    "training_seconds", "created_at")  # fmt: skip
    list_filter = ("kind", "status", "is_active", "feature_level")
    readonly_fields = [f.name for f in DetectionModel._meta.fields]
    actions = ["activate"]

    @admin.action(description="Make the selected version the active one of its kind", permissions=["change"])
    def activate(self, request, queryset):
        for row in queryset:
            try:
                services.activate_model(row)
                self.message_user(request, f"{row.kind} v{row.version} is now active")
            except services.ActivationError as exc:
                self.message_user(request, str(exc), level=messages.ERROR)

    def has_add_permission(self, request):
        return False


@admin.register(Anomaly)
class AnomalyAdmin(admin.ModelAdmin):
    list_display = ("ts", "sensor", "src_ip", "dst_ip", "dst_port", "score", "threshold", "model_kind",
                    "false_positive", "explanation")  # fmt: skip
    list_filter = ("false_positive", "model_kind", "sensor")
    search_fields = ("src_ip", "dst_ip", "explanation")
    readonly_fields = [f.name for f in Anomaly._meta.fields if f.name != "false_positive"]
    actions = ["mark_false_positive"]
    list_select_related = ("sensor",)

    @admin.action(
        description="Mark as false positive (normal traffic for the next training)", permissions=["change"]
    )
    def mark_false_positive(self, request, queryset):
        updated = services.mark_false_positives(queryset, True, request.user)
        self.message_user(request, f"{updated} anomalies marked as false positives")

    def save_model(self, request, obj, form, change):
        if change and form.changed_data == ["false_positive"]:
            services.mark_false_positive(obj, obj.false_positive, request.user)  # records who and when
        else:
            super().save_model(request, obj, form, change)

    def has_add_permission(self, request):
        return False


def _status_action(status: str, description: str):
    """An admin action moving the selected incidents to ``status`` under the API's transition rule."""

    def action(modeladmin: IncidentAdmin, request, queryset) -> None:
        moved, refused = 0, []
        for incident in queryset:
            try:
                services.change_incident_status(incident, status, request.user)
                moved += 1
            except ValueError as exc:  # the transition rule said no: say which and why
                refused.append(f"#{incident.pk}: {exc}")
        if moved:
            modeladmin.message_user(request, f"{moved} incident(s) now {status}")
        for reason in refused:
            modeladmin.message_user(request, reason, level=messages.ERROR)

    action.__name__ = f"mark_{status}"
    return admin.action(description=description, permissions=["change"])(action)


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    list_display = ("last_seen", "sensor", "kind", "severity", "status", "src_ip", "anomaly_count",
                    "peak_score", "first_seen", "explanation")  # fmt: skip
    list_filter = ("status", "kind", "severity", "sensor")
    search_fields = ("src_ip",)
    readonly_fields = [f.name for f in Incident._meta.fields]
    list_select_related = ("sensor",)
    actions = [
        _status_action(IncidentStatus.ACKNOWLEDGED, "Acknowledge"),
        _status_action(IncidentStatus.RESOLVED, "Resolve"),
        _status_action(IncidentStatus.FALSE_POSITIVE, "Mark as false positive (anomalies train as normal)"),
        _status_action(IncidentStatus.OPEN, "Reopen"),
    ]

    def has_add_permission(self, request):
        return False

"""Admin pages for model versions (activate), anomalies (mark false positive), incidents (status,
suppress similar ones) and suppression rules (validated by the API's validator)."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.utils import timezone

from capture.choices import IncidentStatus
from detection import services, suppression
from detection.models import Anomaly, DetectionModel, Incident, SuppressionRule


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


_HOURS = settings.NETMON_SUPPRESSION_DEFAULT_HOURS
_DEFAULT_EXPIRY = f"{_HOURS} h" if _HOURS > 0 else "no expiry"


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
        "suppress_similar",
    ]

    def has_add_permission(self, request):
        return False

    def has_suppress_permission(self, request) -> bool:
        return request.user.has_perm("detection.add_suppressionrule")

    @admin.action(description=f"Suppress similar incidents ({_DEFAULT_EXPIRY})", permissions=["suppress"])
    def suppress_similar(self, request, queryset):
        """One rule per selected incident (detection.suppression.rule_from_incident), default expiry."""
        for incident in queryset:
            try:
                rule = suppression.rule_from_incident(incident, request.user)
                self.message_user(
                    request, f"#{incident.pk}: rule #{rule.pk} suppresses {rule.criteria_text()}"
                )
            except suppression.InvalidRule as exc:
                self.message_user(request, f"#{incident.pk}: {exc}", level=messages.ERROR)


class SuppressionRuleForm(forms.ModelForm):
    """The rule's fields, decided by the API's validator (detection.validation): same rules, same words."""

    class Meta:
        model = SuppressionRule
        fields = ["source_cidr", "target_cidr", "port", "kind", "reason", "expires_at"]

    def clean(self):
        cleaned = super().clean()
        data = {name: cleaned.get(name) for name in self.Meta.fields if name in cleaned}
        data = {name: (None if value == "" else value) for name, value in data.items()}
        try:
            validated = suppression.validated_rule(data)
        except suppression.InvalidRule as exc:
            for name, message in exc.errors.items():
                self.add_error(name if name in self.fields else None, message)
            return cleaned
        cleaned.update(validated)  # normalised CIDRs, stripped reason
        return cleaned


@admin.register(SuppressionRule)
class SuppressionRuleAdmin(admin.ModelAdmin):
    form = SuppressionRuleForm
    list_display = ("id", "criteria", "reason", "expires_at", "hits", "last_hit_at", "active", "created_by",
                    "created_at")  # fmt: skip
    list_filter = ("kind",)
    search_fields = ("source_cidr", "target_cidr", "reason")
    readonly_fields = ("created_by", "created_at", "incident", "hits", "last_hit_at")
    list_select_related = ("created_by",)

    @admin.display(description="criteria")
    def criteria(self, rule: SuppressionRule) -> str:
        return rule.criteria_text()

    @admin.display(description="active", boolean=True)
    def active(self, rule: SuppressionRule) -> bool:
        return rule.is_active(timezone.now())

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

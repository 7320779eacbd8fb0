"""Admin pages for the configuration and its history, sensors, packets and flows."""

from __future__ import annotations

from django import forms
from django.contrib import admin

from capture import services
from capture.choices import CONFIG_KEYS
from capture.models import ConfigChange, Flow, MonitorConfig, Packet, Sensor


class MonitorConfigForm(forms.ModelForm):
    """Runs the API's validator (capture.validation, through the service) on the changed keys."""

    class Meta:
        model = MonitorConfig
        fields = list(CONFIG_KEYS)

    def clean(self):
        cleaned = super().clean()
        values = {key: cleaned[key] for key in CONFIG_KEYS if key in cleaned and key in self.changed_data}
        try:
            services.validate_config_changes(values)
        except services.ConfigError as exc:
            for key, message in exc.errors.items():
                self.add_error(key if key in self.fields else None, message)
        return cleaned


@admin.register(MonitorConfig)
class MonitorConfigAdmin(admin.ModelAdmin):
    form = MonitorConfigForm
    list_display = (*CONFIG_KEYS, "updated_at")

    def has_add_permission(self, request):
        return not MonitorConfig.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        old = {key: form.initial.get(key) for key in CONFIG_KEYS}
        super().save_model(request, obj, form, change)
        if change:
            services.record_admin_change(obj, old, request.user)
            services.announce_config(obj)


@admin.register(ConfigChange)
class ConfigChangeAdmin(admin.ModelAdmin):
    list_display = ("changed_at", "user", "source", "old_values", "new_values")
    list_filter = ("source",)
    readonly_fields = ("changed_at", "user", "source", "old_values", "new_values")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Sensor)
class SensorAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "state",
        "mode",
        "mode_reason",
        "interface",
        "packets_read",
        "packets_stored",
        "packets_dropped_capture",
        "packets_dropped_stream",
        "last_heartbeat",
    )
    readonly_fields = [f.name for f in Sensor._meta.fields]


@admin.register(Packet)
class PacketAdmin(admin.ModelAdmin):
    list_display = (
        "ts",
        "sensor",
        "seq",
        "protocol",
        "src_ip",
        "src_port",
        "dst_ip",
        "dst_port",
        "length",
        "tcp_flags",
        "app_protocol",
        "decode_error",
    )
    list_filter = ("sensor", "protocol", "ip_version")
    search_fields = ("src_ip", "dst_ip", "dns_query", "http_host", "tls_sni")
    date_hierarchy = "ts"
    show_full_result_count = False
    list_select_related = ("sensor",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Flow)
class FlowAdmin(admin.ModelAdmin):
    list_display = (
        "last_seen",
        "sensor",
        "protocol",
        "src_ip",
        "src_port",
        "dst_ip",
        "dst_port",
        "packets",
        "bytes",
        "first_seen",
    )
    list_filter = ("sensor", "protocol")
    search_fields = ("src_ip", "dst_ip")
    show_full_result_count = False
    list_select_related = ("sensor",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

"""Admin pages for export jobs (read-only) and recipient keys (validated RSA public keys)."""

from __future__ import annotations

from django import forms
from django.contrib import admin

from exports import crypto, services
from exports.models import ExportJob, RecipientKey


class RecipientKeyForm(forms.ModelForm):
    """Refuses keys that are not RSA public keys of at least 2048 bits."""

    class Meta:
        model = RecipientKey
        fields = ["name", "public_key_pem"]

    def clean_public_key_pem(self):
        pem = self.cleaned_data["public_key_pem"].strip()
        try:
            self.instance.fingerprint = services.validate_public_key(pem)
        except crypto.ExportError as exc:
            raise forms.ValidationError(str(exc)) from None
        return pem


@admin.register(RecipientKey)
class RecipientKeyAdmin(admin.ModelAdmin):
    form = RecipientKeyForm
    list_display = ("name", "fingerprint", "created_at")


@admin.register(ExportJob)
class ExportJobAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "owner",
        "dataset",
        "format",
        "algorithm",
        "status",
        "row_count",
        "size_bytes",
        "expires_at",
    )
    list_filter = ("status", "dataset", "format", "algorithm")
    readonly_fields = [f.name for f in ExportJob._meta.fields]

    def has_add_permission(self, request):
        return False

"""Incidents as the unit of alerting: kind, severity, status, sources, targets, counts, who/when.

``max_score`` becomes ``peak_score`` and ``summary`` becomes ``explanation`` (renamed: the data
is kept); existing incidents get their source as ``sources`` and are left ``open``.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def sources_from_src_ip(apps, schema_editor):
    Incident = apps.get_model("detection", "Incident")
    for incident in Incident.objects.exclude(src_ip__isnull=True).only("pk", "src_ip").iterator():
        Incident.objects.filter(pk=incident.pk).update(sources=[incident.src_ip])


class Migration(migrations.Migration):
    dependencies = [
        ("detection", "0005_false_positive_audit"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RenameField("incident", "max_score", "peak_score"),
        migrations.RenameField("incident", "summary", "explanation"),
        migrations.AddField(
            model_name="incident",
            name="kind",
            field=models.CharField(
                choices=[
                    ("port_scan", "Port Scan"), ("horizontal_scan", "Horizontal Scan"),
                    ("syn_flood", "Syn Flood"), ("udp_flood", "Udp Flood"), ("icmp_flood", "Icmp Flood"),
                    ("request_flood", "Request Flood"), ("brute_force", "Brute Force"),
                    ("slow_connections", "Slow Connections"), ("large_transfer", "Large Transfer"),
                    ("new_service", "New Service"), ("unusual_traffic", "Unusual Traffic"),
                ],  # fmt: skip
                db_index=True,
                default="unusual_traffic",
                max_length=20,
            ),
        ),
        migrations.AddField(
            model_name="incident",
            name="severity",
            field=models.CharField(
                choices=[("low", "Low"), ("medium", "Medium"), ("high", "High")],
                db_index=True,
                default="low",
                max_length=8,
            ),
        ),
        migrations.AddField(
            model_name="incident",
            name="status",
            field=models.CharField(
                choices=[
                    ("open", "Open"), ("acknowledged", "Acknowledged"), ("resolved", "Resolved"),
                    ("false_positive", "False Positive"),
                ],  # fmt: skip
                db_index=True,
                default="open",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="incident", name="sources", field=models.JSONField(blank=True, default=list)
        ),
        migrations.AddField(
            model_name="incident", name="targets", field=models.JSONField(blank=True, default=list)
        ),
        migrations.AddField(
            model_name="incident",
            name="targets_more",
            field=models.PositiveIntegerField(default=0, help_text="distinct targets beyond those listed"),
        ),
        migrations.AddField(
            model_name="incident", name="opened_at", field=models.DateTimeField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="incident",
            name="packet_count",
            field=models.PositiveBigIntegerField(
                default=0, help_text="packets its sources sent in the reads that added to it"
            ),
        ),
        migrations.AddField(
            model_name="incident", name="evidence", field=models.JSONField(blank=True, default=dict)
        ),
        migrations.AddField(
            model_name="incident",
            name="status_changed_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="incident",
            name="status_changed_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(sources_from_src_ip, migrations.RunPython.noop),
    ]

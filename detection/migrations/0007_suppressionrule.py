"""Suppression rules (source/target CIDR, port, kind, reason, expiry, hits) and the rule that
suppressed an anomaly (``Anomaly.suppressed_by``)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('detection', '0006_incident_fields'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='SuppressionRule',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('source_cidr', models.CharField(blank=True, default='', max_length=64)),
                ('target_cidr', models.CharField(blank=True, default='', max_length=64)),
                ('port', models.PositiveIntegerField(blank=True, help_text='the target port; empty: any', null=True)),
                ('kind', models.CharField(blank=True, choices=[('port_scan', 'Port Scan'), ('horizontal_scan', 'Horizontal Scan'), ('syn_flood', 'Syn Flood'), ('udp_flood', 'Udp Flood'), ('icmp_flood', 'Icmp Flood'), ('request_flood', 'Request Flood'), ('brute_force', 'Brute Force'), ('slow_connections', 'Slow Connections'), ('large_transfer', 'Large Transfer'), ('new_service', 'New Service'), ('unusual_traffic', 'Unusual Traffic')], default='', help_text='empty: any kind', max_length=20)),
                ('reason', models.TextField()),
                ('expires_at', models.DateTimeField(blank=True, db_index=True, help_text='empty: never', null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('hits', models.PositiveBigIntegerField(default=0, help_text='anomalies it suppressed')),
                ('last_hit_at', models.DateTimeField(blank=True, null=True)),
                ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('incident', models.ForeignKey(blank=True, help_text='the incident it was made from', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='suppression_rules', to='detection.incident')),
            ],
            options={
                'ordering': ['-created_at', '-id'],
            },
        ),
        migrations.AddField(
            model_name='anomaly',
            name='suppressed_by',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='suppressed_anomalies', to='detection.suppressionrule'),
        ),
        migrations.AddConstraint(
            model_name='suppressionrule',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('source_cidr', ''), _negated=True), models.Q(('target_cidr', ''), _negated=True), ('port__isnull', False), models.Q(('kind', ''), _negated=True), _connector='OR'), name='suppressionrule_has_a_criterion'),
        ),
    ]

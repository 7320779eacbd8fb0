"""Incidents name the entity they are about; earlier incidents were per source address."""

from django.db import migrations, models


def entity_from_source(apps, schema_editor):
    Incident = apps.get_model("detection", "Incident")
    for incident in Incident.objects.filter(entity="").only("id", "src_ip").iterator():
        Incident.objects.filter(pk=incident.pk).update(entity=f"host {incident.src_ip or 'unknown'}")


class Migration(migrations.Migration):

    dependencies = [
        ('detection', '0007_suppressionrule'),
    ]

    operations = [
        migrations.AddField(
            model_name='incident',
            name='entity',
            field=models.CharField(blank=True, db_index=True, default='', max_length=80),
        ),
        migrations.AlterField(
            model_name='incident',
            name='opened_at',
            field=models.DateTimeField(blank=True, db_index=True, null=True),
        ),
        migrations.RunPython(entity_from_source, migrations.RunPython.noop),
    ]

"""The evidence pcap download (``capture.download_evidence``) for the analyst and the admin.

Frozen, like 0001 and 0002: the lists are those of ``netmon/roles.py`` when this migration was
written. The capture app's permissions are created first (``post_migrate`` would make them only
after every migration has run).
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ADDED = {
    "analyst": ["capture.download_evidence"],
    "admin": ["capture.download_evidence"],
}


def _permissions(apps, db, names):
    Permission = apps.get_model("auth", "Permission")
    found = []
    for name in names:
        app_label, codename = name.split(".", 1)
        found.append(Permission.objects.using(db).get(content_type__app_label=app_label, codename=codename))
    return found


def grant(apps, schema_editor):
    db = schema_editor.connection.alias
    app_config = apps.get_app_config("capture")
    app_config.models_module = True  # historical app configs have none: create_permissions skips them
    create_permissions(app_config, apps=apps, verbosity=0, using=db)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    for role, names in ADDED.items():
        group, _ = Group.objects.using(db).get_or_create(name=role)
        group.permissions.add(*_permissions(apps, db, names))


def revoke(apps, schema_editor):
    db = schema_editor.connection.alias
    Group = apps.get_model("auth", "Group")
    for role, names in ADDED.items():
        group = Group.objects.using(db).filter(name=role).first()
        if group is not None:
            group.permissions.remove(*_permissions(apps, db, names))


class Migration(migrations.Migration):
    dependencies = [
        ("netmon", "0002_suppression_permissions"),
        ("capture", "0007_packet_download_evidence"),
    ]

    operations = [migrations.RunPython(grant, revoke)]

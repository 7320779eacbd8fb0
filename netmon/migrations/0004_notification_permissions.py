"""The notification destinations' and deliveries' permissions for the admin role (the admin site).

Frozen, like 0001: the list is that of ``netmon/roles.py`` when this migration was written. The
alerts app's permissions are created first (``post_migrate`` would make them only after every
migration has run).
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ADDED = {
    "admin": [
        "alerts.view_destination",
        "alerts.add_destination",
        "alerts.change_destination",
        "alerts.delete_destination",
        "alerts.view_delivery",
    ],
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
    app_config = apps.get_app_config("alerts")
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
        ("netmon", "0003_evidence_permission"),
        ("alerts", "0001_initial"),
    ]

    operations = [migrations.RunPython(grant, revoke)]

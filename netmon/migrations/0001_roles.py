"""The three roles (viewer, analyst, admin) as Django groups holding their permissions.

The mapping is frozen here, as it was when this migration was written: a migration must give the
same database whatever ``netmon/roles.py`` says later. A change to ``netmon/roles.py`` needs a
new migration (``tests/netmon/test_roles.py`` fails until there is one).

Permissions are normally created by ``post_migrate``, after every migration has run, so this
migration creates them first (``create_permissions`` for each app, on the historical models).
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEWER = [
    "capture.view_monitorconfig",
    "capture.view_configchange",
    "capture.view_sensor",
    "capture.view_packet",
    "capture.view_flow",
    "detection.view_anomaly",
    "detection.view_incident",
    "detection.view_detectionmodel",
]
ANALYST = VIEWER + [
    "detection.change_incident",
    "detection.change_anomaly",
    "exports.add_exportjob",
    "exports.view_exportjob",
    "exports.delete_exportjob",
]
ADMIN = ANALYST + [
    "capture.change_monitorconfig",
    "capture.control_capture",
    "detection.add_detectionmodel",
    "detection.change_detectionmodel",
    "exports.view_recipientkey",
    "exports.add_recipientkey",
    "exports.change_recipientkey",
    "exports.delete_recipientkey",
    "auth.view_user",
    "auth.add_user",
    "auth.change_user",
    "auth.delete_user",
    "auth.view_group",
    "authtoken.view_tokenproxy",
    "authtoken.delete_tokenproxy",
]
ROLES = {"viewer": VIEWER, "analyst": ANALYST, "admin": ADMIN}


def create_roles(apps, schema_editor):
    db = schema_editor.connection.alias
    for app_config in apps.get_app_configs():
        app_config.models_module = True  # historical app configs have none: create_permissions skips them
        create_permissions(app_config, apps=apps, verbosity=0, using=db)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, names in ROLES.items():
        permissions = []
        for name in names:
            app_label, codename = name.split(".", 1)
            permissions.append(
                Permission.objects.using(db).get(content_type__app_label=app_label, codename=codename)
            )
        group, _ = Group.objects.using(db).get_or_create(name=role)
        group.permissions.set(permissions)


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.using(schema_editor.connection.alias).filter(
        name__in=list(ROLES)
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("authtoken", "0004_alter_tokenproxy_options"),
        ("capture", "0004_sensor_control_capture_permission"),
        ("detection", "0005_false_positive_audit"),
        ("exports", "0001_initial"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]

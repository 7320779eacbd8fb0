"""The notification destinations' and deliveries' permissions for the admin role (the admin site).

Frozen, like 0001: the list is that of ``netmon/roles.py`` when this migration was written. The
alerts app's permissions are created first (``post_migrate`` would make them only after every
migration has run).
"""

from django.db import migrations

from netmon.migrations._grants import grant_permissions

ADDED = {
    "admin": [
        "alerts.view_destination",
        "alerts.add_destination",
        "alerts.change_destination",
        "alerts.delete_destination",
        "alerts.view_delivery",
    ],
}


class Migration(migrations.Migration):
    dependencies = [
        ("netmon", "0003_evidence_permission"),
        ("alerts", "0001_initial"),
    ]

    operations = [grant_permissions("alerts", ADDED)]

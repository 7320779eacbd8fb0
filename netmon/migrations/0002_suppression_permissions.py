"""The suppression rules' permissions for the roles: viewing for every role, creating and deleting
for the analyst and the admin.

Frozen, like 0001: the lists are those of ``netmon/roles.py`` when this migration was written;
the mechanics are shared (``_grants.py``).
The detection app's permissions are created first (``post_migrate`` would make them only after
every migration has run).
"""

from django.db import migrations

from netmon.migrations._grants import grant_permissions

ADDED = {
    "viewer": ["detection.view_suppressionrule"],
    "analyst": [
        "detection.view_suppressionrule",
        "detection.add_suppressionrule",
        "detection.delete_suppressionrule",
    ],
    "admin": [
        "detection.view_suppressionrule",
        "detection.add_suppressionrule",
        "detection.delete_suppressionrule",
    ],
}


class Migration(migrations.Migration):
    dependencies = [
        ("netmon", "0001_roles"),
        ("detection", "0007_suppressionrule"),
    ]

    operations = [grant_permissions("detection", ADDED)]

"""The evidence pcap download (``capture.download_evidence``) for the analyst and the admin.

Frozen, like 0001 and 0002: the lists are those of ``netmon/roles.py`` when this migration was
written. The capture app's permissions are created first (``post_migrate`` would make them only
after every migration has run).
"""

from django.db import migrations

from netmon.migrations._grants import grant_permissions

ADDED = {
    "analyst": ["capture.download_evidence"],
    "admin": ["capture.download_evidence"],
}


class Migration(migrations.Migration):
    dependencies = [
        ("netmon", "0002_suppression_permissions"),
        ("capture", "0007_packet_download_evidence"),
    ]

    operations = [grant_permissions("capture", ADDED)]

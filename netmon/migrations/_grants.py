"""What the role migrations share: grant (and on the way back revoke) frozen lists of permissions.

Django's migration loader skips modules whose names start with ``_``, so this is a helper, not a
migration. The lists each migration passes stay frozen in that migration; only the mechanics live
here: the app's permissions are created first (``post_migrate`` would make them only after every
migration has run), then added to (or removed from) the groups.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.management import create_permissions
from django.db import migrations


def _permissions(apps: Any, db: str, names: list[str]) -> list[Any]:
    Permission = apps.get_model("auth", "Permission")
    found = []
    for name in names:
        app_label, codename = name.split(".", 1)
        found.append(Permission.objects.using(db).get(content_type__app_label=app_label, codename=codename))
    return found


def grant_permissions(app_label: str, added: dict[str, list[str]]) -> migrations.RunPython:
    """A reversible operation adding ``added`` (role -> permission names) of ``app_label``'s models."""

    def grant(apps: Any, schema_editor: Any) -> None:
        db = schema_editor.connection.alias
        app_config = apps.get_app_config(app_label)
        app_config.models_module = True  # historical app configs have none: create_permissions skips them
        create_permissions(app_config, apps=apps, verbosity=0, using=db)
        app_config.models_module = None
        Group = apps.get_model("auth", "Group")
        for role, names in added.items():
            group, _ = Group.objects.using(db).get_or_create(name=role)
            group.permissions.add(*_permissions(apps, db, names))

    def revoke(apps: Any, schema_editor: Any) -> None:
        db = schema_editor.connection.alias
        Group = apps.get_model("auth", "Group")
        for role, names in added.items():
            group = Group.objects.using(db).filter(name=role).first()
            if group is not None:
                group.permissions.remove(*_permissions(apps, db, names))

    return migrations.RunPython(grant, revoke)

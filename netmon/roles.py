"""The roles: three Django groups (viewer, analyst, admin), each a set of Django permissions.

The permissions are what the API (``capture.permissions.HasPermission``), the WebSocket
(``netmon/consumers.py``), the dashboard and the admin check; the groups only bundle them. An admin
can therefore make a custom role in the admin (a group with other permissions) and it works
everywhere. Superusers hold every permission. A user in no group (no permission at all) can log
in and is told to ask an admin for a role.

``ROLE_PERMISSIONS`` is the mapping. ``netmon/migrations/0001_roles.py`` created the groups from a
frozen copy of it (a migration must not change when this module does), and
``0002_suppression_permissions.py`` added the suppression rules' permissions,
``0003_evidence_permission.py`` the evidence download and ``0004`` the notification destinations';
a test checks that a
migrated database's groups equal this mapping, so a change here needs a new migration
(``sync_roles`` is what such a migration calls).
"""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import transaction

from capture.choices import Role

VIEWER = (
    "capture.view_monitorconfig",
    "capture.view_configchange",
    "capture.view_sensor",
    "capture.view_packet",
    "capture.view_flow",
    "detection.view_anomaly",
    "detection.view_incident",
    "detection.view_detectionmodel",
    "detection.view_suppressionrule",
)
ANALYST = (
    *VIEWER,
    "detection.change_incident",  # acknowledge and resolve incidents
    "detection.change_anomaly",  # mark false positives
    "detection.add_suppressionrule",  # suppress known traffic (from an incident, or a rule of their own)
    "detection.delete_suppressionrule",
    "exports.add_exportjob",  # create exports; the API scopes every export to its owner
    "exports.view_exportjob",
    "exports.delete_exportjob",
    "capture.download_evidence",  # the raw frames (payloads included) behind packets and incidents
)
ADMIN = (
    *ANALYST,
    "capture.change_monitorconfig",
    "capture.control_capture",  # start and stop capture, change its BPF filter
    "detection.add_detectionmodel",  # train
    "detection.change_detectionmodel",  # activate
    "exports.view_recipientkey",
    "exports.add_recipientkey",
    "exports.change_recipientkey",
    "exports.delete_recipientkey",
    "auth.view_user",
    "auth.add_user",
    "auth.change_user",
    "auth.delete_user",
    "auth.view_group",
    "authtoken.view_tokenproxy",  # see and revoke API tokens in the admin
    "authtoken.delete_tokenproxy",
    "alerts.view_destination",  # notification destinations, in the admin
    "alerts.add_destination",
    "alerts.change_destination",
    "alerts.delete_destination",
    "alerts.view_delivery",  # what was sent, what failed
)
ROLE_PERMISSIONS: dict[str, tuple[str, ...]] = {Role.VIEWER: VIEWER, Role.ANALYST: ANALYST, Role.ADMIN: ADMIN}
# Roles whose users reach the Django admin (where the same model permissions apply).
STAFF_ROLES = frozenset({Role.ADMIN})

# The permissions the dashboard and the WebSocket's ``connected`` greeting report, so that the
# page can hide what the user may not do (the server checks every action anyway).
DASHBOARD_PERMISSIONS = (
    "capture.view_sensor",
    "capture.view_packet",
    "capture.view_monitorconfig",
    "capture.change_monitorconfig",
    "capture.control_capture",
    "detection.view_anomaly",
    "detection.change_anomaly",
    "detection.view_incident",
    "detection.change_incident",  # acknowledge, resolve, mark false positive, reopen
    "detection.add_suppressionrule",  # suppress what an incident shows (analyst and admin)
    "detection.view_detectionmodel",
    "detection.add_detectionmodel",
    "detection.change_detectionmodel",
    "exports.view_exportjob",
    "exports.add_exportjob",
    "capture.download_evidence",  # the incident page's "download pcap" button
)


def permission_objects(names: tuple[str, ...] | list[str]) -> list[Permission]:
    """The Permission rows of ``app_label.codename`` names; raises LookupError naming any missing one."""
    found = {
        f"{p.content_type.app_label}.{p.codename}": p
        for p in Permission.objects.select_related("content_type").filter(
            codename__in=[name.split(".", 1)[1] for name in names]
        )
    }
    missing = [name for name in names if name not in found]
    if missing:
        raise LookupError(f"no such permission(s): {', '.join(missing)} (run migrate first)")
    return [found[name] for name in names]


def sync_roles() -> None:
    """Make each role's group hold exactly its permissions (creating the groups when missing)."""
    with transaction.atomic():
        for role, names in ROLE_PERMISSIONS.items():
            group, _ = Group.objects.get_or_create(name=role)
            group.permissions.set(permission_objects(names))


def group_permissions(name: str) -> set[str]:
    """The ``app_label.codename`` names a group holds (empty when there is no such group)."""
    return {
        f"{app}.{codename}"
        for app, codename in Permission.objects.filter(group__name=name).values_list(
            "content_type__app_label", "codename"
        )
    }


def roles_of(user: Any) -> list[str]:
    """The names of the user's groups (a superuser also counts as ``admin``), built-in roles first."""
    if not getattr(user, "is_authenticated", False):
        return []
    names = set(user.groups.values_list("name", flat=True))
    if user.is_superuser:
        names.add(Role.ADMIN)
    return [r for r in Role.values if r in names] + sorted(names - set(Role.values))


def dashboard_permissions(user: Any) -> list[str]:
    """Which of the dashboard's permissions the user holds (read fresh from the database)."""
    fresh = get_user_model().objects.get(pk=user.pk)  # Django caches permissions on the object
    return [name for name in DASHBOARD_PERMISSIONS if fresh.has_perm(name)]


def assign_role(user: Any, role: str) -> None:
    """Put the user in exactly one built-in role's group (keeping custom groups); admin is staff."""
    if role not in Role.values:
        raise ValueError(f"unknown role {role!r}; choose one of: {', '.join(Role.values)}")
    with transaction.atomic():
        group = Group.objects.get(name=role)
        user.groups.remove(*Group.objects.filter(name__in=Role.values).exclude(pk=group.pk))
        user.groups.add(group)
        staff = role in STAFF_ROLES or user.is_superuser
        if user.is_staff != staff:
            user.is_staff = staff
            user.save(update_fields=["is_staff"])


def create_user(
    username: str, role: str, *, password: str | None = None, email: str = ""
) -> tuple[Any, str | None]:
    """A new user in ``role`` (``manage.py create_user`` and the tests use this).

    Returns (user, password): the generated password when none was given, else None.
    Raises ValueError for an unknown role or a username that is taken.
    """
    if role not in Role.values:
        raise ValueError(f"unknown role {role!r}; choose one of: {', '.join(Role.values)}")
    User = get_user_model()
    generated = None
    if password is None:
        password = generated = secrets.token_urlsafe(12)
    with transaction.atomic():
        if User.objects.filter(username=username).exists():
            raise ValueError(f"a user named {username!r} exists already")
        user = User.objects.create_user(username=username, email=email, password=password)
        assign_role(user, role)
    return user, generated

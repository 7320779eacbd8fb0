"""The roles: the migrated groups are netmon/roles.py's mapping; create_user and ensure_demo_user."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from capture.choices import Role
from netmon import roles

pytestmark = pytest.mark.django_db


def test_the_migrated_groups_are_the_mapping_of_netmon_roles():
    """A change to ROLE_PERMISSIONS without a migration that applies it fails here.

    (This test reads what the migrations left: it must not call ``sync_roles`` itself.)
    """
    migrated = {group.name: roles.group_permissions(group.name) for group in Group.objects.all()}

    assert migrated == {role: set(names) for role, names in roles.ROLE_PERMISSIONS.items()}


def test_the_roles_are_the_vocabulary_and_each_holds_the_one_before_it():
    assert list(roles.ROLE_PERMISSIONS) == Role.values == ["viewer", "analyst", "admin"]
    viewer, analyst, admin = (set(roles.ROLE_PERMISSIONS[r]) for r in Role.values)
    assert viewer < analyst < admin
    assert "capture.control_capture" in admin - analyst
    assert "capture.change_monitorconfig" in admin - analyst
    assert {"exports.add_exportjob", "detection.change_anomaly"} <= analyst - viewer
    assert not any(name.startswith("exports.") for name in viewer)


def test_every_permission_of_the_mapping_exists():
    for names in roles.ROLE_PERMISSIONS.values():
        assert len(roles.permission_objects(names)) == len(names)


def test_only_the_admin_role_is_staff():
    roles.sync_roles()
    made = {role: roles.create_user(f"u-{role}", role, password="x" * 12)[0] for role in Role.values}

    assert {role: user.is_staff for role, user in made.items()} == {
        "viewer": False,
        "analyst": False,
        "admin": True,
    }
    assert made["admin"].has_perm("capture.control_capture")
    assert not made["analyst"].has_perm("capture.control_capture")


# --- manage.py create_user ----------------------------------------------------------------------


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("create_user", *args, stdout=out)
    return out.getvalue()


def test_create_user_makes_a_user_in_the_role_and_prints_a_working_token(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    out = run("carol", "--role", "analyst", "--password-stdin", "--email", "carol@example.org")

    carol = get_user_model().objects.get(username="carol")
    assert list(carol.groups.values_list("name", flat=True)) == ["analyst"]
    assert carol.email == "carol@example.org" and not carol.is_staff
    assert carol.check_password("a long enough password")
    key = out.split("API token: ")[1].split()[0]
    assert Token.objects.get(key=key).user == carol
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/packets/").status_code == 200
    assert client.post("/api/config", {"buffer_size": 2000}, format="json").status_code == 403


def test_create_user_generates_a_password_when_none_is_given():
    out = run("dave", "--role", "admin")

    password = out.split("with password ")[1].split("'")[1]
    dave = get_user_model().objects.get(username="dave")
    assert dave.check_password(password) and dave.is_staff


def test_create_user_refuses_an_unknown_role_naming_the_allowed_ones():
    with pytest.raises(CommandError, match=r"unknown role 'root'; choose one of: viewer, analyst, admin"):
        run("eve", "--role", "root")
    assert not get_user_model().objects.filter(username="eve").exists()


def test_create_user_leaves_an_existing_user_alone_unless_asked_to_update(viewer):
    with pytest.raises(CommandError, match="exists already; nothing changed"):
        run("vera", "--role", "admin")
    viewer.refresh_from_db()
    assert list(viewer.groups.values_list("name", flat=True)) == ["viewer"] and not viewer.is_staff

    run("vera", "--role", "admin", "--update")

    viewer.refresh_from_db()
    assert list(viewer.groups.values_list("name", flat=True)) == ["admin"] and viewer.is_staff


# --- manage.py ensure_demo_user (make run) ----------------------------------------------------


def test_ensure_demo_user_makes_an_admin_role_user_once(capsys):
    call_command("ensure_demo_user")
    call_command("ensure_demo_user")

    out = capsys.readouterr().out
    admin = get_user_model().objects.get(username="admin")
    assert list(admin.groups.values_list("name", flat=True)) == ["admin"]
    assert admin.is_staff and not admin.is_superuser
    assert out.count("Created 'admin'") == 1
    assert "An admin exists" in out


def test_ensure_demo_user_does_nothing_when_a_superuser_exists(staff, capsys):
    call_command("ensure_demo_user")

    assert "An admin exists" in capsys.readouterr().out
    assert not get_user_model().objects.filter(username="admin").exists()

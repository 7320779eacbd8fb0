"""Creates a demo admin-role user (and API token) when the database has no admin, printing it once."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db.models import Q

from capture.choices import Role
from netmon.auth import issue_token
from netmon.roles import create_user


class Command(BaseCommand):
    help = (
        "Create the 'admin' user in the admin role with a random password if no admin-role user "
        "or superuser exists (prints the password once)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username: str, **options):
        User = get_user_model()
        if User.objects.filter(Q(is_superuser=True) | Q(groups__name=Role.ADMIN), is_active=True).exists():
            self.stdout.write(
                "An admin exists; sign in with it (or `python manage.py changepassword`, "
                "`python manage.py create_user NAME --role admin`)."
            )
            return
        if User.objects.filter(username=username).exists():
            self.stdout.write(
                f"A user named {username!r} exists but is not an admin: "
                f"`python manage.py create_user {username} --role admin --update` makes it one."
            )
            return
        user, password = create_user(username, Role.ADMIN)
        token = issue_token(user)
        self.stdout.write(
            self.style.SUCCESS(
                f"Created {username!r} in the admin role with password {password!r} (shown only now).\n"
                f'API token: {token.key}   e.g. curl -H "Authorization: Token {token.key}" '
                "http://127.0.0.1:8000/api/status"
            )
        )

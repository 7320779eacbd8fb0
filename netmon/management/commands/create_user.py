"""`manage.py create_user NAME --role viewer|analyst|admin`: a user in one role, with an API token."""

from __future__ import annotations

import sys

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from capture.choices import Role
from netmon.auth import issue_token
from netmon.roles import assign_role, create_user


class Command(BaseCommand):
    help = (
        "Create a user in one role (viewer, analyst or admin) and print an API token for it. "
        "Without --password-stdin a random password is generated and printed once."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        # Not argparse choices: an unknown role is refused with the allowed ones named, in one line.
        parser.add_argument("--role", required=True, help=f"one of: {', '.join(Role.values)}")
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--password-stdin", action="store_true", help="read the password from standard input"
        )
        parser.add_argument(
            "--update",
            action="store_true",
            help="if the user exists, put it in this role instead (its password is left alone)",
        )

    def handle(self, *args, username: str, role: str, email: str, password_stdin: bool, update: bool, **opts):
        if role not in Role.values:
            raise CommandError(f"unknown role {role!r}; choose one of: {', '.join(Role.values)}")
        existing = get_user_model().objects.filter(username=username).first()
        if existing is not None:
            if not update:
                raise CommandError(
                    f"a user named {username!r} exists already; nothing changed "
                    "(--update puts it in this role)"
                )
            assign_role(existing, role)
            self.stdout.write(self.style.SUCCESS(f"{username!r} is now in the role {role}."))
            self._print_token(existing)
            return
        password = None
        if password_stdin:
            password = sys.stdin.readline().rstrip("\n")
            if not password:
                raise CommandError("--password-stdin: standard input held no password")
        try:
            user, generated = create_user(username, role, password=password, email=email)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        shown = f" with password {generated!r} (shown only now)" if generated else ""
        self.stdout.write(self.style.SUCCESS(f"Created {username!r} in the role {role}{shown}."))
        self._print_token(user)

    def _print_token(self, user) -> None:
        token = issue_token(user)
        self.stdout.write(f"API token: {token.key}")

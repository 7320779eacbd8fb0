"""Creates a demo superuser (and API token) when the database has none, printing the credentials once."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from netmon.auth import issue_token


class Command(BaseCommand):
    help = "Create the 'admin' superuser with a random password if no superuser exists (prints it once)."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username: str, **options):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("A superuser exists; sign in with it (or `python manage.py changepassword`).")
            return
        password = secrets.token_urlsafe(12)
        user = User.objects.create_superuser(username=username, email="", password=password)
        token = issue_token(user)
        self.stdout.write(
            self.style.SUCCESS(
                f"Created superuser {username!r} with password {password!r} (shown only now).\n"
                f'API token: {token.key}   e.g. curl -H "Authorization: Token {token.key}" '
                "http://127.0.0.1:8000/api/status"
            )
        )

"""Create a first superuser for the quick start and say how to log in."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

PASSWORD_FILE = settings.VAR_DIR / "admin-password.txt"


class Command(BaseCommand):
    help = "Create the superuser 'admin' with a random password when no superuser exists yet."

    def handle(self, *args, **options):
        users = get_user_model().objects
        login_url = f"{settings.PORTAL_PUBLIC_URL}/admin/"
        existing = users.filter(is_superuser=True).order_by("pk").first()
        if existing:
            hint = f" (password in {PASSWORD_FILE})" if PASSWORD_FILE.exists() else ""
            self.stdout.write(f"Log in at {login_url} as {existing.get_username()!r}{hint}.")
            return
        password = secrets.token_urlsafe(12)
        users.create_superuser("admin", email="", password=password)
        PASSWORD_FILE.parent.mkdir(parents=True, exist_ok=True)
        PASSWORD_FILE.write_text(password + "\n")
        PASSWORD_FILE.chmod(0o600)
        self.stdout.write(f"Created superuser 'admin'. Log in at {login_url} with password {password}")
        self.stdout.write(f"(also saved in {PASSWORD_FILE})")

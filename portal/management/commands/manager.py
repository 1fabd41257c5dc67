"""Staff accounts from the command line: a building manager or a viewer for some sites."""

from django.apps import apps as django_apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from portal import roles
from portal.models import Site


class Command(BaseCommand):
    help = "Manage staff: 'add' a building manager (or, with --viewer, a read-only viewer) for some sites."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        add = actions.add_parser("add", help="Create a staff account that sees only its sites.")
        add.add_argument("username")
        add.add_argument("--password", required=True)
        add.add_argument("--sites", required=True, help="Comma-separated site names.")
        add.add_argument("--viewer", action="store_true", help="Read-only: may not acknowledge or resolve alarms.")
        add.add_argument("--email", default="")

    def handle(self, *args, action, **options):
        return getattr(self, action)(**options)

    def add(self, *, username, password, sites, viewer, email, **_):
        users = get_user_model()
        username = username.strip()
        if not username:
            raise CommandError("The username is empty.")
        if users.objects.filter(username=username).exists():
            raise CommandError(f"A user named {username!r} already exists.")
        names = [name.strip() for name in sites.split(",") if name.strip()]
        found = {site.name: site for site in Site.objects.filter(name__in=names)}
        missing = [name for name in names if name not in found]
        if not names or missing:
            raise CommandError(f"No site named {', '.join(map(repr, missing))}." if missing else "--sites is empty.")
        user = users(username=username, email=email, is_staff=True)
        try:
            validate_password(password, user)
        except ValidationError as exc:
            raise CommandError("password: " + " ".join(exc.messages)) from None
        role = roles.VIEWER if viewer else roles.BUILDING_MANAGER
        with transaction.atomic():
            user.set_password(password)
            user.save()
            if not Group.objects.filter(name=role).exists():  # a database flushed since it was migrated
                roles.ensure_roles(django_apps)
            user.groups.add(Group.objects.get(name=role))
            user.sites.set(found.values())
        self.stdout.write(f"Created {role.lower()} {username!r} for {', '.join(found)}")

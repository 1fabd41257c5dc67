"""Create and list PDK connections from the command line."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from portal.models import Site
from subscriptions.admin import test_connection
from subscriptions.management.commands._common import describe
from subscriptions.models import PdkConnection


class Command(BaseCommand):
    help = "Manage PDK connections: 'add' one, 'list' them, or 'test' one (fetch a token and list hooks)."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        add = actions.add_parser("add", help="Create a connection to one PDK organization.")
        add.add_argument("--name", required=True)
        add.add_argument("--org", required=True, help="The PDK organization id.")
        add.add_argument("--client-id", required=True)
        add.add_argument("--client-secret", required=True)
        add.add_argument("--accounts-url", default="https://accounts.pdk.io")
        add.add_argument("--site", help="Name of an existing site.")
        actions.add_parser("list", help="List connections (never their secrets).")
        test = actions.add_parser("test", help="Fetch a token and list hooks.")
        test.add_argument("--name", required=True)

    def handle(self, *args, action, **options):
        return getattr(self, action)(**options)

    def add(self, *, name, org, client_id, client_secret, accounts_url, site, **_):
        connection = PdkConnection(
            name=name, org_id=org, client_id=client_id, client_secret=client_secret, accounts_url=accounts_url
        )
        if site:
            connection.site = Site.objects.filter(name=site).first()
            if connection.site is None:
                raise CommandError(f"No site named {site!r}.")
        try:
            connection.full_clean()
        except ValidationError as exc:
            raise CommandError(describe(exc)) from None
        connection.save()
        self.stdout.write(f"Created PDK connection {connection.name!r} for organization {connection.org_id}")

    def list(self, **_):
        for c in PdkConnection.objects.select_related("site"):
            site = c.site.name if c.site else "no site"
            self.stdout.write(f"{c.name}  org {c.org_id}  {c.accounts_url}  [{site}]  {c.last_error or 'ok'}")

    def test(self, *, name, **_):
        connection = PdkConnection.objects.filter(name=name).first()
        if connection is None:
            raise CommandError(f"No PDK connection named {name!r}.")
        message, level = test_connection(connection)
        if not message.startswith("OK"):
            raise CommandError(message)
        self.stdout.write(message)

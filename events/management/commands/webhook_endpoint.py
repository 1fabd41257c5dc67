"""Create and list inbound webhook endpoints from the command line."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from events import sources
from events.models import Endpoint
from portal.models import Site


class Command(BaseCommand):
    help = "Manage inbound webhook endpoints: 'add' one (prints its path last) or 'list' them."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        add = actions.add_parser("add", help="Create an endpoint; its path is the last line printed.")
        add.add_argument("--source", required=True, choices=sorted(sources.MODULES))
        add.add_argument("--name", help="Defaults to '<Vendor> endpoint'.")
        add.add_argument("--site", help="Name of an existing site.")
        add.add_argument("--secret", default="", help="PDK signing secret or Seam whsec_ secret.")
        add.add_argument("--basic", metavar="USER:PASSWORD", help="PDK: Basic credentials to require.")
        add.add_argument("--header", metavar="NAME", default="", help="SPK apiKeyHeader: the header name.")
        add.add_argument("--token", default="", help="SPK apiKeyHeader: the static token.")
        add.add_argument("--bearer", metavar="TOKEN", default="", help="SPK bearerToken: the token.")
        add.add_argument("--partner-id", default="", help="SPK: the org id detail.partnerId must equal.")
        add.add_argument("--no-auth", action="store_true", help="SPK: accept unauthenticated deliveries.")
        add.add_argument("--inactive", action="store_true", help="Create it switched off.")
        actions.add_parser("list", help="List endpoints (never their secrets).")

    def handle(self, *args, action, **options):
        if action == "add":
            return self.add(**options)
        return self.list()

    def add(self, *, source, name, site, secret, basic, header, token, bearer, partner_id, no_auth, inactive, **_):
        if header and not token:
            raise CommandError("--header needs --token.")
        if token and not header:
            raise CommandError("--token needs --header (or use --bearer).")
        if sum(bool(x) for x in (secret, token, bearer)) > 1:
            raise CommandError("Give only one of --secret, --token, --bearer.")
        user, password = "", ""
        if basic is not None:
            user, sep, password = basic.partition(":")
            if not (user and sep and password):
                raise CommandError("--basic must be USER:PASSWORD.")
        endpoint = Endpoint(
            source=source,
            name=name or f"{sources.get(source).LABEL} endpoint",
            secret=secret or token or bearer,
            basic_username=user,
            basic_password=password,
            token_header=header,
            partner_id=partner_id,
            unauthenticated=no_auth,
            active=not inactive,
        )
        if site:
            endpoint.site = Site.objects.filter(name=site).first()
            if endpoint.site is None:
                raise CommandError(f"No site named {site!r}.")
        try:
            endpoint.full_clean()
        except ValidationError as exc:
            raise CommandError(_describe(exc)) from None
        endpoint.save()
        self.stdout.write(f"Created {endpoint.get_source_display()} endpoint {endpoint.name!r}")
        self.stdout.write(f"Verification: {endpoint.verification}")
        self.stdout.write(f"URL: {endpoint.url}")
        self.stdout.write(endpoint.path)

    def list(self):
        endpoints = Endpoint.objects.select_related("site")
        if not endpoints:
            self.stdout.write("No endpoints yet: python manage.py webhook_endpoint add --source …")
        for e in endpoints:
            state = "active" if e.active else "inactive"
            site = e.site.name if e.site else "no site"
            self.stdout.write(f"{e.path}  {e.source:<4}  {state:<8}  {e.name}  [{site}]  {e.verification}")


def _describe(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
    return " ".join(exc.messages)

"""Create and list portal-managed PDK subscriptions from the command line."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from subscriptions.management.commands._common import describe
from subscriptions.models import SCOPE_OU, SCOPE_RECURSIVE, PdkConnection, PdkSubscription


def _scope(text: str):
    text = text.strip()
    if text in (SCOPE_OU, SCOPE_RECURSIVE):
        return text
    return [panel.strip() for panel in text.split(",") if panel.strip()]


class Command(BaseCommand):
    help = "Manage PDK subscriptions: 'add' one (pushed to PDK by a worker) or 'list' them."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        add = actions.add_parser("add", help="Create a portal-managed subscription; a worker pushes it to PDK.")
        add.add_argument("--connection", required=True, help="Name of the PDK connection.")
        add.add_argument("--name", required=True, help="At most 70 characters.")
        add.add_argument("--events", required=True, help="Topics separated by commas (one kind only).")
        add.add_argument("--scope", default=SCOPE_RECURSIVE, help="ou, ouRecursive, or PANEL,PANEL… (panel events).")
        add.add_argument("--secrecy-level", type=int, default=1, help="0, 1 (default) or 2.")
        add.add_argument("--expires-at", help="ISO 8601 time in the future.")
        add.add_argument("--basic-user", default="", help="Basic authentication user PDK sends.")
        add.add_argument("--basic-password", default="", help="Basic authentication password PDK sends.")
        add.add_argument("--no-ssl-verification", action="store_true")
        add.add_argument("--inactive", action="store_true", help="Create it switched off.")
        actions.add_parser("list", help="List subscriptions and their sync state.")

    def handle(self, *args, action, **options):
        return getattr(self, action)(**options)

    def add(self, *, connection, name, events, scope, secrecy_level, expires_at, basic_user, basic_password, **opts):
        found = PdkConnection.objects.filter(name=connection).first()
        if found is None:
            raise CommandError(f"connection: no PDK connection named {connection!r}.")
        expires = None
        if expires_at:
            expires = parse_datetime(expires_at)
            if expires is None:
                raise CommandError(f"expires_at: {expires_at!r} is not an ISO 8601 time.")
            if expires.tzinfo is None:
                raise CommandError(f"expires_at: {expires_at!r} needs a time zone (e.g. Z or +00:00).")
        basic = bool(basic_user or basic_password)
        subscription = PdkSubscription(
            connection=found,
            managed=True,
            name=name,
            events=[topic.strip() for topic in events.split(",") if topic.strip()],
            scope=_scope(scope),
            secrecy_level=secrecy_level,
            expires_at=expires,
            auth_type=PdkSubscription.AuthType.BASIC if basic else PdkSubscription.AuthType.NONE,
            auth_user=basic_user,
            auth_password=basic_password,
            ssl_verification=not opts["no_ssl_verification"],
            active=not opts["inactive"],
        )
        try:
            subscription.full_clean()
        except ValidationError as exc:
            raise CommandError(describe(exc)) from None
        subscription.save_new()
        self.stdout.write(f"Created PDK subscription {subscription.name!r} (pending push to PDK)")
        self.stdout.write(f"URL: {subscription.url}")

    def list(self, **_):
        for s in PdkSubscription.objects.select_related("connection"):
            managed = "managed" if s.managed else "imported"
            state = s.get_sync_state_display()
            self.stdout.write(
                f"{s.pk}  {s.connection.name}  {s.name!r}  {managed}  {state}  "
                f"{'active' if s.active else 'inactive'}  {len(s.events)} topic(s)  {s.last_error}"
            )

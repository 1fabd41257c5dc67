"""Create and list notification rules from the command line (the admin's validation, same messages)."""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from portal.models import Site
from subscriptions.management.commands._common import describe
from subscriptions.models import NotificationRule, generate_webhook_secret


def _items(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


class Command(BaseCommand):
    help = "Manage notification rules: 'add' one or 'list' them (secrets are never listed)."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        add = actions.add_parser("add", help="Create a rule; a webhook rule's secret is the last line printed.")
        add.add_argument("--name", required=True)
        add.add_argument("--channel", required=True, help="email or webhook")
        add.add_argument("--to", help="Email addresses separated by commas.")
        add.add_argument("--users", help="Portal user names separated by commas (they need an email address).")
        add.add_argument("--url", default="", help="The webhook URL (http or https).")
        add.add_argument("--sites", help="Site names separated by commas; none: every site.")
        add.add_argument("--alarm-kinds", help="Alarm kinds separated by commas, e.g. door_forced,door_propped.")
        add.add_argument("--min-severity", default="", help="minor, major or critical.")
        add.add_argument("--event-types", help="Vendor event types separated by commas.")
        add.add_argument("--repeat-minutes", type=int, help="Repeat every N minutes until acknowledged.")
        add.add_argument("--notify-cleared", action="store_true", help="Also notify when the alarm clears.")
        add.add_argument("--owner", help="User name emailed if the webhook gets disabled.")
        actions.add_parser("list", help="List rules (without secrets).")

    def handle(self, *args, action, **options):
        return getattr(self, action)(**options)

    def add(self, *, name, channel, url, min_severity, repeat_minutes, notify_cleared, **opts):
        users_model = get_user_model()
        names = _items(opts["users"])
        users = list(users_model.objects.filter(**{f"{users_model.USERNAME_FIELD}__in": names}))
        missing = sorted(set(names) - {u.get_username() for u in users})
        if missing:
            raise CommandError(f"users: no such user: {', '.join(missing)}.")
        site_names = _items(opts["sites"])
        sites = list(Site.objects.filter(name__in=site_names))
        missing = sorted(set(site_names) - {s.name for s in sites})
        if missing:
            raise CommandError(f"sites: no such site: {', '.join(missing)}.")
        owner = None
        if opts["owner"]:
            owner = users_model.objects.filter(**{users_model.USERNAME_FIELD: opts["owner"]}).first()
            if owner is None:
                raise CommandError(f"owner: no such user: {opts['owner']}.")
        rule = NotificationRule(
            name=name,
            channel=channel,
            owner=owner,
            emails=_items(opts["to"]),
            url=url,
            alarm_kinds=_items(opts["alarm_kinds"]),
            min_severity=min_severity,
            event_types=_items(opts["event_types"]),
            repeat_minutes=repeat_minutes,
            notify_cleared=notify_cleared,
        )
        rule._users_for_validation = users
        if channel == NotificationRule.Channel.WEBHOOK:
            rule.secret = generate_webhook_secret()
        try:
            rule.full_clean()
        except ValidationError as exc:
            raise CommandError(describe(exc)) from None
        with transaction.atomic():
            rule.save()
            rule.users.set(users)
            rule.sites.set(sites)
        where = ", ".join(s.name for s in sites) or "every site"
        self.stdout.write(f"Created notification rule {rule.name!r} ({rule.channel}, {where})")
        if rule.channel == NotificationRule.Channel.WEBHOOK:
            self.stdout.write("Webhook signing secret (shown only this once):")
            self.stdout.write(rule.secret)

    def list(self, **_):
        for rule in NotificationRule.objects.prefetch_related("sites", "users"):
            sites = ", ".join(s.name for s in rule.sites.all()) or "every site"
            to = (
                rule.url
                if rule.channel == "webhook"
                else ", ".join([*rule.emails, *(u.get_username() for u in rule.users.all())])
            )
            triggers = ",".join(rule.alarm_kinds) or "any kind"
            extra = f" >= {rule.min_severity}" if rule.min_severity else ""
            events = f" events {','.join(rule.event_types)}" if rule.event_types else ""
            state = "active" if rule.active else "inactive"
            if rule.webhook_disabled_at:
                state += f", webhook disabled ({rule.webhook_disabled_reason})"
            self.stdout.write(
                f"{rule.pk}  {rule.name!r}  {rule.channel}  {state}  {sites}  {triggers}{extra}{events}  -> {to}"
            )

"""Notification fan-out and delivery: matching rules, storm control, quiet hours, email and signed webhooks.

Rules hear of alarm changes (portal.AlarmChange) and of processed events whose type they name
(EventNotice). An event that raised or cleared an alarm is told once, as that alarm's change.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
import uuid
import zlib
import zoneinfo
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import requests
import standardwebhooks
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives, send_mail
from django.core.validators import validate_email
from django.db import (
    DEFAULT_DB_ALIAS,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    connections,
    transaction,
)
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.urls import get_script_prefix, get_urlconf, reverse
from django.utils import timezone

from events import sources
from events.models import Event
from portal.models import Activity, Alarm, AlarmChange, Lock, Site
from portal.sql import Joined, insert, insert_statement, quoted_table
from subscriptions.models import EventNotice, Notification, NotificationAttempt, NotificationRule

log = logging.getLogger(__name__)
Status = Notification.Status
SEVERITY_RANK = {"minor": 0, "major": 1, "critical": 2}
RESPONSE_KEPT = 2048


class Clock:
    """The time every scheduling decision uses (due times, storm windows, quiet hours, the 5 days).

    Production reads the real time; tests move it (``advance``, ``set``) to drive retries, windows
    and quiet hours without waiting. The webhook-timestamp header always carries the real time:
    receivers check it against their own clock.
    """

    def __init__(self):
        self.frozen: datetime | None = None

    def now(self) -> datetime:
        return self.frozen or timezone.now()

    def set(self, when: datetime) -> None:
        """Stop the clock at this time (it moves only with ``advance``)."""
        self.frozen = when

    def advance(self, delta: timedelta) -> None:
        self.frozen = self.now() + delta

    def reset(self) -> None:
        self.frozen = None


clock = Clock()


# --- validation ---------------------------------------------------------------------------------


def alarm_kind_names() -> dict[str, str]:
    from portal.domain import ALARM_KINDS

    return {kind: label for kind, (label, _) in ALARM_KINDS.items()}


def webhook_url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"The webhook URL must be an http:// or https:// URL; {url!r} is not."
    portal = urlsplit(settings.PORTAL_PUBLIC_URL)

    def where(p):
        return (p.hostname or "").lower(), p.port or (443 if p.scheme == "https" else 80)

    if where(parts) == where(portal):
        return f"The webhook URL points at the portal itself ({settings.PORTAL_PUBLIC_URL})."
    return None


def validate_rule(rule: NotificationRule, users=None) -> None:
    """Every rule a rule must follow, each on its field. ``users``: the users being set (a form or
    the command), else the stored ones."""
    errors: dict[str, list[str]] = {}

    def problem(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    if users is None:
        users = list(rule.users.all()) if rule.pk else []
    kinds = rule.alarm_kinds if isinstance(rule.alarm_kinds, list) else None
    if kinds is None:
        problem("alarm_kinds", "Alarm kinds must be a list.")
    else:
        unknown = sorted(set(kinds) - set(alarm_kind_names()))
        if unknown:
            problem(
                "alarm_kinds", f"Unknown alarm kinds: {', '.join(unknown)} (known: {', '.join(alarm_kind_names())})."
            )
    types = rule.event_types if isinstance(rule.event_types, list) else None
    if types is None or not all(isinstance(t, str) and t.strip() for t in types):
        problem("event_types", "Event types must be a list of vendor event type names.")
    elif unknown := sorted(set(types) - sources.known_event_types()):
        problem(
            "event_types",
            f"Unknown event types: {', '.join(unknown)}. Use the vendors' own type names, as the events list "
            "shows them, e.g. door.request.denied (PDK), LockOpenRequested (SPK), lock.unlocked (Seam).",
        )
    if rule.min_severity and rule.min_severity not in SEVERITY_RANK:
        problem("min_severity", "Minimum severity must be minor, major or critical.")
    if not (kinds or rule.min_severity or types):
        problem("alarm_kinds", "Choose at least one trigger: alarm kinds, a minimum severity or event types.")

    emails = rule.emails if isinstance(rule.emails, list) else None
    if emails is None:
        problem("emails", "Emails must be a list of addresses.")
        emails = []
    for address in emails:
        try:
            validate_email(address)
        except ValidationError:
            problem("emails", f"{address!r} is not an email address.")
    if rule.channel == NotificationRule.Channel.EMAIL:
        if not emails and not users:
            problem("emails", "An email rule needs at least one recipient: an email address or a user.")
        for user in users:
            if not user.email:
                problem("users", f"User {user.get_username()!r} has no email address.")
        if rule.url:
            problem("url", "Only webhook rules have a URL.")
    elif rule.channel == NotificationRule.Channel.WEBHOOK:
        if not rule.url:
            problem("url", "A webhook rule needs a URL.")
        elif message := webhook_url_problem(rule.url):
            problem("url", message)
        if emails or users:
            problem("emails", "A webhook rule sends to its URL only; leave emails and users empty.")
    else:
        problem("channel", "Channel must be email or webhook.")

    days = rule.quiet_days if isinstance(rule.quiet_days, list) else None
    if days is None or not all(isinstance(d, int) and 0 <= d <= 6 for d in days):
        problem("quiet_days", "Quiet days must be weekdays 0 (Monday) to 6 (Sunday).")
    partial = [rule.quiet_start is None, rule.quiet_end is None]
    if any(partial) and not all(partial):
        problem("quiet_end" if partial[1] else "quiet_start", "Quiet hours need both a start and an end.")
    elif not any(partial) and rule.quiet_start == rule.quiet_end:
        problem("quiet_end", "Quiet hours must end at another time than they start.")
    elif not any(partial) and not days:
        problem("quiet_days", "Choose the days quiet hours apply on.")
    if rule.repeat_minutes is not None and rule.repeat_minutes < 1:
        problem("repeat_minutes", "Repeat at least every minute.")
    if errors:
        raise ValidationError(errors)


# --- matching ------------------------------------------------------------------------------------


def rule_matches(rule: NotificationRule, alarm: Alarm, site_ids: set[int], event_type: str | None = None) -> bool:
    """Whether a change of this alarm, made by an event of ``event_type``, is news for the rule."""
    if site_ids and alarm.site_id not in site_ids:
        return False
    if rule.event_types:
        # The event that made this change, or the one that raised the alarm (its clear is news too).
        types = {event_type} | {e.event_type for e in (alarm.raised_by, alarm.cleared_by) if e is not None}
        if types & set(rule.event_types):
            return True
    if not (rule.alarm_kinds or rule.min_severity):
        return False
    if rule.alarm_kinds and alarm.kind not in rule.alarm_kinds:
        return False
    return not rule.min_severity or SEVERITY_RANK[alarm.severity] >= SEVERITY_RANK[rule.min_severity]


def site_zone(site: Site | None) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(site.timezone if site else "UTC")


def in_quiet_hours(rule: NotificationRule, site: Site | None, at: datetime) -> bool:
    if rule.quiet_start is None or rule.quiet_end is None or not rule.quiet_days:
        return False
    zone = site_zone(site)
    local = at.astimezone(zone)
    now, day = local.time(), local.weekday()
    start, end = rule.quiet_start, rule.quiet_end
    if start < end:
        return day in rule.quiet_days and start <= now < end
    # Overnight: from start on a quiet day until end the next morning.
    return (day in rule.quiet_days and now >= start) or ((day - 1) % 7 in rule.quiet_days and now < end)


def recipients(rule: NotificationRule) -> list[str]:
    if rule.channel == NotificationRule.Channel.WEBHOOK:
        return ["webhook"]
    found = dict.fromkeys(address.lower() for address in rule.emails)
    found |= dict.fromkeys(u.email.lower() for u in rule.users.all() if u.email)
    return list(found)


# --- fan-out -------------------------------------------------------------------------------------


def publish_fan_out(**_) -> None:
    """After a commit that changed alarms (portal.signals) or processed events some rule names: one
    task fans out what is pending. If the broker is down, the changes wait in the database for the
    next task or beat's sweep."""
    from subscriptions.tasks import fan_out_alarms

    try:
        fan_out_alarms.delay()
    except Exception:
        log.warning("could not enqueue the fan-out of alarm changes; beat's sweep will", exc_info=True)


def note_events_for_rules(events: list[Event], where: dict[int, dict | None], **_) -> None:
    """Inside the transaction that processed these events (events.signals): keep those whose type
    an active rule names, with where they happened, durably with their processing; fan them out
    once it commits."""
    wanted: set[str] = set()
    for types in NotificationRule.objects.filter(active=True).values_list("event_types", flat=True):
        wanted.update(types or [])
    notices = [
        EventNotice(event=event, site_id=(where.get(event.pk) or {}).get("site_id"),
                    lock_id=(where.get(event.pk) or {}).get("lock_id"))
        for event in events
        if event.event_type in wanted
    ]  # fmt: skip
    if notices:
        # A replayed event was noticed the first time: it is not news again.
        EventNotice.objects.bulk_create(notices, ignore_conflicts=True)
        transaction.on_commit(publish_fan_out)


def fan_out_pending(limit: int = 500) -> list[int]:
    """Create the notifications for the alarm changes and the noticed events not yet fanned out,
    oldest first, and publish their sends once the batch commits; the ids of those sends.

    Several workers may run it at once: each claims different changes (SKIP LOCKED), and takes the
    storm locks of all the topics its batch touches first, in one fixed order, so two batches never
    wait on each other in a cycle. The batch runs without a savepoint per change (two round trips
    each saved) and without looking for notifications an earlier run made (a pending change has
    none); if a change fails, the batch is rolled back and run again checked, each change in its
    own savepoint, so a change that fails (a bug, a bad row) is logged and stays pending for the
    next run while the rest of its batch goes on.
    """
    rules = listening_rules()  # once for the whole run
    try:
        return _fan_out_batch(rules, limit, isolate=False)
    except _ChangeFailed:
        return _fan_out_batch(rules, limit, isolate=True)


class _ChangeFailed(Exception):
    """A change failed in the optimistic pass: the batch is run again, one savepoint per change."""


def _fan_out_batch(rules: list[NotificationRule], limit: int, *, isolate: bool) -> list[int]:
    with transaction.atomic():
        changes = list(
            AlarmChange.objects.filter(fanned_out_at__isnull=True)
            .annotate(event_type=F("event__event_type"))
            .order_by("pk")
            .select_for_update(skip_locked=True, of=("self",))[:limit]
        )
        alarms = _alarms_to_tell().in_bulk({change.alarm_id for change in changes})
        notices = list(
            EventNotice.objects.filter(fanned_out_at__isnull=True)
            .select_related("event", "site", "lock")
            .order_by("pk")
            .select_for_update(skip_locked=True, of=("self",))[:limit]
        )
        whereabouts = {notice.pk: event_whereabouts(notice) for notice in notices}
        _lock_topics([alarm_topic(alarm) for alarm in alarms.values()] + [w.topic for w in whereabouts.values()])
        pks, changes_done, notices_done = [], [], []
        for change in changes:
            made = _run_one(
                lambda change=change: fan_out(
                    change.alarm_id, change.change, change.occurrences, change.event_type, rules,
                    alarm=alarms.get(change.alarm_id), storm_locked=True, checked=isolate,
                ),
                f"alarm change {change.pk}",
                isolate=isolate,
            )  # fmt: skip
            if made is not None:
                pks += made
                changes_done.append(change.pk)
        for notice in notices:
            made = _run_one(
                lambda notice=notice: fan_out_event(
                    notice, rules, whereabouts[notice.pk], storm_locked=True, checked=isolate
                ),
                f"event notice {notice.pk}",
                isolate=isolate,
            )
            if made is not None:
                pks += made
                notices_done.append(notice.pk)
        now = clock.now()
        if changes_done:
            AlarmChange.objects.filter(pk__in=changes_done).update(fanned_out_at=now)
        if notices_done:
            EventNotice.objects.filter(pk__in=notices_done).update(fanned_out_at=now)
        enqueue(pks)
    return pks


def _run_one(work, what: str, *, isolate: bool) -> list[int] | None:
    """One change's fan-out: straight in the batch's transaction, or (``isolate``) in a savepoint of
    its own, where a failure is logged and the change left pending (None)."""
    if not isolate:
        try:
            return work()
        except (OperationalError, InterfaceError):
            raise  # the database is away: the run stops, and the sweep tries again
        except Exception as exc:
            raise _ChangeFailed from exc
    try:
        with transaction.atomic():
            return work()
    except (OperationalError, InterfaceError):
        raise
    except Exception:
        log.exception("could not fan out %s; it stays pending for the next run", what)
        return None


def _alarms_to_tell():
    """Alarms with what matching and the message need: the raising and clearing events' types (not
    their vendor payloads), the site and the door."""
    return Alarm.objects.select_related("site", "raised_by", "cleared_by", "lock").defer(
        "raised_by__payload", "cleared_by__payload"
    )


def listening_rules() -> list[NotificationRule]:
    """The rules that may notify now: active, and not a disabled webhook."""
    return [
        rule
        for rule in NotificationRule.objects.filter(active=True).prefetch_related("sites", "users")
        if not (rule.channel == NotificationRule.Channel.WEBHOOK and rule.webhook_disabled_at)
    ]


def fan_out(
    alarm_pk: int,
    change: str,
    occurrences: int,
    event_type: str | None = None,
    rules=None,
    *,
    alarm=None,
    storm_locked: bool = False,
    checked: bool = True,
) -> list[int]:
    """Create the notifications one alarm change calls for; the ids of those to send now.

    ``change`` is "raised" (a raise counted ``occurrences``) or "cleared", made by an event of
    ``event_type``. Safe to run twice: the (rule, recipient, alarm, occurrence) constraint makes a
    re-run create nothing. ``storm_locked``: the caller holds the topic's storm lock already.
    ``checked=False`` (fan_out_pending's first pass) skips the look for a notification made by an
    earlier run: a change pending has had none committed, and if one is there after all, the unique
    constraint fails the batch, which runs again checked.
    """
    if alarm is None:
        alarm = _alarms_to_tell().filter(pk=alarm_pk).first()
    if alarm is None:
        return []
    # The first raise of an alarm is news even if it was cleared before the rules heard of it (the
    # clear came in the same batch, or first: events out of order); a raise counted in an alarm
    # that is over already is not.
    if change == "raised" and occurrences > 1 and alarm.state not in Alarm.OPEN_STATES:
        return []
    if change == "cleared" and alarm.state != Alarm.State.CLEARED:
        return []
    now = clock.now()
    to_send: list[int] = []
    for rule in listening_rules() if rules is None else rules:
        # A rule that names the clearing event's type asked for the clear.
        if change == "cleared" and not (rule.notify_cleared or event_type in rule.event_types):
            continue
        if not rule_matches(rule, alarm, {s.pk for s in rule.sites.all()}, event_type):
            continue
        with transaction.atomic(savepoint=False):  # the storm lock lasts until the caller commits
            if not storm_locked:
                _serialize(alarm_topic(alarm))
            for recipient in recipients(rule):
                pk = _notify_one(rule, recipient, alarm, change, occurrences, now, checked=checked)
                if pk:
                    to_send.append(pk)
    return to_send


class Whereabouts:
    """Where a noticed event happened, as the notifications tell it, and its storm topic."""

    def __init__(self, event: Event, site: Site | None, lock: Lock | None):
        self.event, self.site, self.lock = event, site, lock
        self.topic = f"event:{event.event_type}:" + (f"lock:{lock.pk}" if lock else f"site:{site.pk}" if site else "-")


def event_whereabouts(notice: EventNotice) -> Whereabouts:
    """The door of the event's activity, else the first lock its handler touched; the site of that
    activity or lock, else of the panel, hub or account it met, else of the delivering endpoint."""
    event = notice.event
    activity = Activity.objects.select_related("lock", "site").filter(event_id=event.pk).first()
    lock = (activity.lock if activity else None) or notice.lock
    site = (activity.site if activity else None) or (lock.site if lock and lock.site_id else None)
    return Whereabouts(event, site or notice.site or _endpoint_site(event), lock)


def fan_out_event(
    notice: EventNotice,
    rules=None,
    where: Whereabouts | None = None,
    *,
    storm_locked: bool = False,
    checked: bool = True,
) -> list[int]:
    """Create the notifications one noticed event calls for, from the rules that name its type;
    the ids of those to send now. An event that raised or cleared an alarm is told as that alarm's
    change (fan_out), never a second time here. Safe to run twice, like fan_out."""
    event = notice.event
    if _changed_an_alarm(event.pk):
        return []
    rules = [rule for rule in (listening_rules() if rules is None else rules) if event.event_type in rule.event_types]
    if not rules:
        return []
    where = where or event_whereabouts(notice)
    site, topic = where.site, where.topic
    now = clock.now()
    to_send: list[int] = []
    for rule in rules:
        site_ids = {s.pk for s in rule.sites.all()}
        if site_ids and (site is None or site.pk not in site_ids):
            continue
        with transaction.atomic(savepoint=False):
            if not storm_locked:
                _serialize(topic)
            for recipient in recipients(rule):
                if (
                    checked
                    and Notification.objects.filter(
                        rule=rule, recipient=recipient, event=event, occurrence="event"
                    ).exists()
                ):
                    continue  # a re-run of this fan-out
                row = Notification(
                    rule=rule,
                    recipient=recipient,
                    event=event,
                    occurrence="event",
                    change="event",
                    channel=rule.channel,
                    site=site,
                    topic=topic,
                    created_at=now,
                    due_at=now,
                )
                if pk := _decide(row, rule, site, now, severity=None):
                    to_send.append(pk)
    return to_send


def _changed_an_alarm(event_pk: int) -> bool:
    """Raised (or counted in) an alarm, or cleared one: the rules heard of it as that change. A
    clear that found nothing open changed nothing: a rule naming its type hears of the event."""
    return AlarmChange.objects.filter(event_id=event_pk).exists()


def _endpoint_site(event: Event) -> Site | None:
    if event.endpoint_id is None:
        return None
    return Site.objects.filter(endpoint__pk=event.endpoint_id).first()  # one query, not two


def alarm_topic(alarm: Alarm) -> str:
    return f"alarm:{alarm.kind}:{alarm.subject}"


STORM_LOCK = 0x73746F72  # "stor": the advisory lock namespace of storm decisions


def _topic_key(topic: str) -> int:
    return zlib.crc32(f"notify:{topic}".encode()) - 2**31


def _serialize(topic: str) -> None:
    """One fan-out at a time per topic: storm decisions read what the last one wrote.

    PostgreSQL: a transaction-scoped advisory lock on just that topic, so fan-outs about other doors
    and the senders never wait. Elsewhere (SQLite) nothing: it has one writer at a time anyway.
    """
    _lock_topics([topic])


def _lock_topics(topics) -> None:
    """Take the storm locks of these topics, in one fixed order (every batch does the same), in one
    statement: PostgreSQL evaluates the locking function row by row after the sort."""
    keys = sorted({_topic_key(topic) for topic in topics})
    if connection.vendor != "postgresql" or not keys:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, key) FROM unnest(%s::int[]) AS key ORDER BY key", [STORM_LOCK, keys]
        )


def _notify_one(rule, recipient, alarm, change, occurrences, now, *, checked: bool = True) -> int | None:
    occurrence = "cleared" if change == "cleared" else str(occurrences)
    row = Notification(
        rule=rule,
        recipient=recipient,
        alarm=alarm,
        occurrence=occurrence,
        channel=rule.channel,
        site_id=alarm.site_id,
        topic=alarm_topic(alarm),
        occurrences=alarm.occurrences,
        created_at=now,
        due_at=now,
    )
    mine = Notification.objects.filter(rule=rule, recipient=recipient)
    if checked and mine.filter(alarm=alarm, occurrence=occurrence).exists():
        return None  # a re-run of this fan-out
    if change == "cleared":
        row.change = "cleared"
    elif occurrences <= 1:
        row.change = "raised"
    elif _escalated_since_told(mine, alarm):
        row.change = "escalated"
    else:
        row.change = "repeated"
    return _decide(row, rule, alarm.site, now, severity=alarm.severity)


def _escalated_since_told(mine, alarm: Alarm) -> bool:
    """Whether the alarm is more severe now than in the last message this recipient got about it."""
    told = mine.filter(
        alarm=alarm, status__in=[Status.SENT, Status.PENDING, Status.RETRYING, Status.SENDING, Status.DEAD]
    )
    last = told.order_by("-due_at").values_list("payload__data__severity", flat=True).first()
    return bool(last) and SEVERITY_RANK.get(last, 0) < SEVERITY_RANK[alarm.severity]


def _decide(row: Notification, rule: NotificationRule, site: Site | None, now: datetime, severity) -> int | None:
    """Save a new notification as held back (quiet hours), summarised (storm control) or to send
    now; its id if it is to be sent. Events have no severity: quiet hours hold them all back.
    The caller holds the storm lock of the row's topic, and found no such row or (unchecked) lets
    the unique constraint fail its batch if there is one."""
    if in_quiet_hours(rule, site, now) and not (rule.critical_in_quiet_hours and severity == Alarm.Severity.CRITICAL):
        row.status, row.reason = Status.SKIPPED, "quiet hours"
        return _insert(row, send=False, locked=True)

    if row.change != "escalated":
        storm = _storm_digest(rule, row, now)
        if storm is not None:
            row.status, row.digest, row.reason = Status.COALESCED, storm, f"storm control: summarised in #{storm.pk}"
            return _insert(row, send=False, locked=True)
    row.next_attempt_at, row.enqueued_at = now, now
    return _insert(row, send=True, locked=True)


def _insert(row: Notification, *, send: bool, locked: bool = False) -> int | None:
    """Save a new notification; its id if it is to be sent now, None if not or if a concurrent run
    made it. ``locked``: the caller holds the row's storm lock and found no such row under it, so
    nobody else can make it: no savepoint is needed (a unique violation there is a bug, and fails
    the change)."""
    if locked:
        insert(row)
        return row.pk if send else None
    try:
        with transaction.atomic():
            insert(row)
    except IntegrityError as exc:
        if not _is_duplicate(exc):
            raise
        return None  # a concurrent run made it
    return row.pk if send else None


def _is_duplicate(exc: IntegrityError) -> bool:
    """A unique constraint refused the row (PostgreSQL's unique_violation, SQLite's message)."""
    return getattr(exc.__cause__, "sqlstate", None) == "23505" or "UNIQUE constraint failed" in str(exc)


def _storm_digest(rule, row: Notification, now) -> Notification | None:
    """Within the window after the last message on this row's topic (an alarm's door or panel, an
    event type at a door), a new one is not sent: it is counted in a summary that goes out when the
    window ends."""
    window = timedelta(seconds=settings.PORTAL_NOTIFY_STORM_WINDOW_SECONDS)
    if window <= timedelta(0):
        return None
    # The last message on the topic within the window. In SQL: it runs for every notification
    # made, and the ORM took four times as long to build it as the database to answer it.
    last = next(
        iter(
            Notification.objects.raw(
                f"SELECT id, change, status, attempts, due_at FROM {quoted_table(Notification)} "  # noqa: S608 (model table)
                "WHERE rule_id = %s AND recipient = %s AND topic = %s AND due_at > %s "
                "AND status NOT IN (%s, %s) AND change <> %s ORDER BY due_at DESC LIMIT 1",
                [
                    rule.pk,
                    row.recipient,
                    row.topic,
                    connection.ops.adapt_datetimefield_value(now - window),
                    Status.COALESCED,
                    Status.SKIPPED,
                    "reminder",
                ],
            )  # fmt: skip
        ),
        None,
    )
    if last is None:
        return None
    if last.change == "storm" and last.status == Status.PENDING and last.attempts == 0:
        return last
    window_end = last.due_at + window
    digest, _ = Notification.objects.get_or_create(
        rule=rule,
        recipient=row.recipient,
        alarm=row.alarm,
        event=row.event,
        occurrence=f"storm-{int(window_end.timestamp())}",
        defaults={
            "change": "storm",
            "channel": rule.channel,
            "site_id": row.site_id,
            "topic": row.topic,
            "created_at": now,
            "due_at": window_end,
            "next_attempt_at": window_end,
        },
    )
    return digest


def send_reminders() -> int:
    """Repeat-until-acknowledged: another message about each still active alarm every N minutes."""
    now = clock.now()
    made = []
    for rule in NotificationRule.objects.filter(active=True, repeat_minutes__isnull=False):
        since = now - timedelta(minutes=rule.repeat_minutes)
        heard = (
            Notification.objects.filter(rule=rule, alarm__state=Alarm.State.ACTIVE)
            .exclude(status__in=[Status.COALESCED, Status.SKIPPED])
            .exclude(change="cleared")
            .order_by()
            .values_list("alarm_id", "recipient")
            .distinct()
        )
        for alarm_id, recipient in heard:
            with transaction.atomic():
                alarm = Alarm.objects.select_related("site").get(pk=alarm_id)
                _serialize(alarm_topic(alarm))
                mine = Notification.objects.filter(rule=rule, recipient=recipient, alarm_id=alarm_id)
                latest = mine.exclude(status=Status.COALESCED).order_by("-due_at").first()
                if latest is None or latest.due_at > since:
                    continue
                count = mine.filter(change="reminder").count()
                row = Notification(
                    rule=rule,
                    recipient=recipient,
                    alarm=alarm,
                    occurrence=f"reminder-{count + 1}",
                    change="reminder",
                    channel=rule.channel,
                    site_id=alarm.site_id,
                    topic=alarm_topic(alarm),
                    occurrences=alarm.occurrences,
                    created_at=now,
                    due_at=now,
                    next_attempt_at=now,
                    enqueued_at=now,
                )
                if in_quiet_hours(rule, alarm.site, now) and not (
                    rule.critical_in_quiet_hours and alarm.severity == Alarm.Severity.CRITICAL
                ):
                    row.status, row.reason, row.next_attempt_at = Status.SKIPPED, "quiet hours", None
                    _insert(row, send=False)
                elif pk := _insert(row, send=True):
                    made.append(pk)
    enqueue(made)
    return len(made)


def enqueue(pks: list[int]) -> None:
    if not pks:
        return
    from subscriptions.tasks import deliver_notification

    def publish():
        try:
            with deliver_notification.app.producer_or_acquire() as producer:  # one connection for all
                for pk in pks:
                    deliver_notification.apply_async((pk,), producer=producer)
        except Exception:  # the sweep sends them later
            log.warning("could not enqueue notifications %s; the sweep will", pks)

    transaction.on_commit(publish)


def send_due(limit: int = 500) -> int:
    """Beat's sweep: publish the notifications whose time has come (retries, storm summaries) and
    those whose task was lost (published over a minute ago and still not sent)."""
    fan_out_pending()  # changes whose fan-out task was lost (the broker was down at their commit)
    now = clock.now()
    with transaction.atomic():
        due = list(
            Notification.objects.filter(
                Q(status__in=Notification.DUE_STATES) | Q(status=Status.SENDING),
                next_attempt_at__lte=now,
            )
            .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=now - timedelta(seconds=60)))
            .order_by("next_attempt_at")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        Notification.objects.filter(pk__in=due).update(enqueued_at=now)
        enqueue(due)
    return len(due)


# --- delivery ------------------------------------------------------------------------------------


def deliver(pk: int) -> str:
    """One try at one notification, if it is due and nobody else is trying it; what became of it."""
    now = clock.now()
    lease = now + timedelta(seconds=settings.PORTAL_NOTIFY_WEBHOOK_TIMEOUT_SECONDS * 3 + 30)
    note = _claim(pk, now, lease)
    if note is None:
        return "not due"
    if note is WAITING:
        _try_again_soon(pk)
        return "waiting: the rule has as many sends in flight as it may"
    rule, alarm = note.rule, note.alarm
    if note.change == "reminder" and alarm.state != Alarm.State.ACTIVE:
        return _finish(note, Status.SKIPPED, f"alarm {alarm.state} before the reminder went out")
    if not rule.active:
        return _finish(note, Status.DEAD, "the rule was switched off")
    if rule.channel == NotificationRule.Channel.WEBHOOK and rule.webhook_disabled_at:
        return _finish(note, Status.DEAD, f"webhook disabled: {rule.webhook_disabled_reason}")
    if note.payload is None:
        if note.change == "storm" and alarm is not None:
            note.occurrences = note.coalesced.count()
            # The summary tells where the subject stands now (the last flap), not where it began.
            latest = Alarm.objects.filter(kind=alarm.kind, subject=alarm.subject).order_by("-pk").first()
            note.alarm = latest or alarm
        elif note.change == "storm":
            note.occurrences = note.coalesced.count()
            latest = Event.objects.filter(pk=note.coalesced.order_by("-event_id").values("event_id")[:1]).first()
            note.event = latest or note.event
        # Fixed now and saved with the outcome: every retry sends the same body and webhook-id.
        note.message_id = f"msg_{uuid.uuid4().hex}"
        note.payload = build_payload(note, now)
    number = note.attempts + 1  # in this series (a resend starts a new one)
    started = time.perf_counter()
    outcome = _post_webhook(note, rule) if rule.channel == NotificationRule.Channel.WEBHOOK else _send_email(note)
    attempt = NotificationAttempt(
        notification=note,
        number=number,
        at=now,
        duration_ms=int((time.perf_counter() - started) * 1000),
        status_code=outcome.status_code,
        error=outcome.error[:500],
        response=outcome.response[:RESPONSE_KEPT],
        succeeded=outcome.ok,
    )
    note.attempts = number
    if outcome.ok:
        # The webhook's health is written when it changes (or once a minute), not on every send.
        stale = rule.webhook_last_success_at is None or now - rule.webhook_last_success_at > timedelta(minutes=1)
        if rule.channel == NotificationRule.Channel.WEBHOOK and (rule.webhook_failing_since or stale):
            NotificationRule.objects.filter(pk=rule.pk).update(webhook_failing_since=None, webhook_last_success_at=now)
        note.sent_at = now
        return _finish(note, Status.SENT, "", attempt)
    if outcome.status_code == 410:
        disable_webhook(rule, "the receiver answered 410 Gone", now)
        return _finish(note, Status.DEAD, "410 Gone: the rule's webhook is disabled", attempt)
    if rule.channel == NotificationRule.Channel.WEBHOOK and _failing_too_long(rule, now):
        days = settings.PORTAL_NOTIFY_DISABLE_AFTER_DAYS
        disable_webhook(rule, f"failed without a success for {days:g} days", now)
        return _finish(note, Status.DEAD, f"webhook disabled after {days:g} days of failures", attempt)
    schedule = settings.PORTAL_NOTIFY_RETRY_SCHEDULE
    if number > len(schedule):
        return _finish(note, Status.DEAD, f"gave up after {number} tries: {outcome.summary()}", attempt)
    delay = schedule[number - 1]
    if outcome.retry_after is not None:
        delay = max(delay, min(outcome.retry_after, 24 * 3600))
    note.next_attempt_at = now + timedelta(seconds=delay)
    return _finish(note, Status.RETRYING, outcome.summary(), attempt)


WAITING = "waiting"
IN_FLIGHT_LOCK = 0x6E6F7466  # "notf": the advisory lock namespace of the per-rule send limit


def _claim(pk: int, now: datetime, lease: datetime) -> Notification | str | None:
    """Mark the notification as being sent until ``lease``, if it is due and its rule has room for
    one more webhook send in flight (a slow receiver is held to PORTAL_NOTIFY_MAX_IN_FLIGHT_PER_RULE);
    the notification with its rule and its alarm's site and door, WAITING if the rule is full,
    None if it is not due.

    Written in SQL, two statements on PostgreSQL: this runs for every message sent, and the ORM's
    version cost more than the rest of a send. A per-rule advisory lock makes the count and the
    claim one at a time per rule; the claim is a statement of its own, so its snapshot sees every
    claim made before it.
    """
    notes = quoted_table(Notification)
    due = [Status.PENDING, Status.RETRYING, Status.SENDING]  # a "sending" row whose lease has passed is due again
    webhook = NotificationRule.Channel.WEBHOOK
    at, until = (connection.ops.adapt_datetimefield_value(value) for value in (now, lease))
    claim = f"""UPDATE {notes} SET status = %s, next_attempt_at = %s
        WHERE {notes}.id = %s AND {notes}.status IN (%s, %s, %s) AND {notes}.next_attempt_at <= %s
          AND ({notes}.channel <> %s OR (
              SELECT COUNT(*) FROM {notes} AS flying WHERE flying.rule_id = {notes}.rule_id
              AND flying.status = %s AND flying.next_attempt_at > %s AND flying.channel = %s) < %s)"""  # noqa: S608 (model tables)
    params = [Status.SENDING, until, pk, *due, at, webhook, Status.SENDING, at, webhook,
              settings.PORTAL_NOTIFY_MAX_IN_FLIGHT_PER_RULE]  # fmt: skip
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"SELECT pg_advisory_xact_lock(%s, (rule_id %% 2147483648)::int) FROM {notes} WHERE id = %s",  # noqa: S608 (model tables)
                [IN_FLIGHT_LOCK, pk],
            )
            cursor.execute(f"WITH claimed AS ({claim} RETURNING {notes}.*) {_CLAIMED.sql('claimed')}", params)
            row = cursor.fetchone()
        else:  # SQLite has no UPDATE inside WITH: the same in two statements
            cursor.execute(f"{claim} RETURNING id", params)
            row = None
            if cursor.fetchone():
                cursor.execute(f"{_CLAIMED.sql(f'{notes} AS claimed')} WHERE claimed.id = %s", [pk])
                row = cursor.fetchone()
        if row is None:
            still_due = Notification.objects.filter(status__in=due, pk=pk, next_attempt_at__lte=now).exists()
            return WAITING if still_due else None
    note, rule, alarm, site, door = _CLAIMED.instances(row)
    note.rule = rule
    if alarm is not None:
        alarm.site, alarm.lock = site, door
        note.alarm = alarm
    return note


# A claimed notification, its rule, and its alarm's site and door: what a send needs, in one read.
_CLAIMED = Joined(
    (Notification, "claimed"),
    ("JOIN", NotificationRule, "rule", "rule.id = claimed.rule_id"),
    ("LEFT JOIN", Alarm, "alarm", "alarm.id = claimed.alarm_id"),
    ("LEFT JOIN", Site, "site", "site.id = alarm.site_id"),
    ("LEFT JOIN", Lock, "door", "door.id = alarm.lock_id"),
)


def _try_again_soon(pk: int) -> None:
    from subscriptions.tasks import deliver_notification

    def publish():
        try:
            deliver_notification.apply_async((pk,), countdown=1)
        except Exception:  # the sweep sends it later
            log.warning("could not enqueue notification %s again; the sweep will", pk)

    transaction.on_commit(publish)


_FINISHED = ("status", "reason", "next_attempt_at", "enqueued_at", "attempts", "sent_at", "payload", "message_id",
             "occurrences")  # fmt: skip


def _finish(note: Notification, status: str, reason: str, attempt: NotificationAttempt | None = None) -> str:
    """Save where the notification now stands, with the attempt that brought it there (if any)."""
    note.status, note.reason = status, reason[:300]
    if status != Status.RETRYING:
        note.next_attempt_at = None
    note.enqueued_at = None
    if attempt is None:
        note.save(update_fields=_FINISHED)
    elif connection.vendor == "postgresql":
        _save_with_attempt(note, attempt)
    else:
        with transaction.atomic():
            attempt.save(force_insert=True)
            note.save(update_fields=_FINISHED)
    return status


def _save_with_attempt(note: Notification, attempt: NotificationAttempt) -> None:
    """PostgreSQL: the attempt's insert and the notification's update in one statement, as every
    send ends with both."""
    db = connections[DEFAULT_DB_ALIAS]
    insert_attempt, params = insert_statement(attempt)
    params += [field.get_db_prep_save(getattr(note, field.attname), db) for field in _finished_fields()]
    with db.cursor() as cursor:
        cursor.execute(f"WITH attempt AS ({insert_attempt}) {_finish_sql()}", [*params, note.pk])


@functools.cache
def _finished_fields() -> list:
    return [Notification._meta.get_field(name) for name in _FINISHED]


@functools.cache
def _finish_sql() -> str:
    """The notification's update of ``_finish``, its id the last parameter."""
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in _finished_fields())
    return f"UPDATE {quoted_table(Notification)} SET {assignments} WHERE id = %s"  # noqa: S608 (a model's table)


def _failing_too_long(rule: NotificationRule, now: datetime) -> bool:
    NotificationRule.objects.filter(pk=rule.pk, webhook_failing_since__isnull=True).update(webhook_failing_since=now)
    since = NotificationRule.objects.filter(pk=rule.pk).values_list("webhook_failing_since", flat=True).first()
    return since is not None and now - since >= timedelta(days=settings.PORTAL_NOTIFY_DISABLE_AFTER_DAYS)


def disable_webhook(rule: NotificationRule, reason: str, now: datetime) -> None:
    """No more tries at this URL until someone enables it again; the owner hears about it."""
    changed = NotificationRule.objects.filter(pk=rule.pk, webhook_disabled_at__isnull=True).update(
        webhook_disabled_at=now, webhook_disabled_reason=reason[:200]
    )
    if not changed:
        return
    owner = rule.owner
    to = [owner.email] if owner and owner.email else []
    if not to:
        to = list(
            get_user_model()
            .objects.filter(is_superuser=True, is_active=True)
            .exclude(email="")
            .values_list("email", flat=True)
        )
    if not to:
        log.warning("webhook of rule %s disabled (%s); nobody to tell", rule.pk, reason)
        return
    context = {
        "rule": rule,
        "reason": reason,
        "link": admin_link("admin:subscriptions_notificationrule_change", rule.pk),
    }
    send_mail(
        render_to_string("notifications/webhook_disabled_subject.txt", context).strip(),
        render_to_string("notifications/webhook_disabled.txt", context),
        settings.DEFAULT_FROM_EMAIL,
        to,
        fail_silently=True,
    )


def enable_webhook(rule: NotificationRule) -> None:
    NotificationRule.objects.filter(pk=rule.pk).update(
        webhook_disabled_at=None, webhook_disabled_reason="", webhook_failing_since=None
    )


def resend(notifications) -> int:
    """Send these again from the first try (a new attempt series, the same webhook-id)."""
    now = clock.now()
    pks = list(notifications.exclude(status__in=[Status.COALESCED, Status.SENDING]).values_list("pk", flat=True))
    Notification.objects.filter(pk__in=pks).update(
        status=Status.PENDING, attempts=0, next_attempt_at=now, enqueued_at=now, reason="resent"
    )
    with transaction.atomic():
        enqueue(pks)
    return len(pks)


# --- the message ---------------------------------------------------------------------------------


def admin_link(name: str, pk: int) -> str:
    return settings.PORTAL_PUBLIC_URL + _admin_path(name, get_script_prefix(), get_urlconf()).format(pk=pk)


@functools.lru_cache(maxsize=64)
def _admin_path(name: str, *_url_setup) -> str:
    """The admin page's path with a {pk} slot: resolved once per URL set-up, not on every message."""
    marker = "4242424242"
    return reverse(name, args=[marker]).replace("{", "{{").replace("}", "}}").replace(marker, "{pk}")


TYPES = {
    "raised": "alarm.raised",
    "repeated": "alarm.repeated",
    "escalated": "alarm.escalated",
    "cleared": "alarm.cleared",
    "reminder": "alarm.reminder",
    "storm": "alarm.storm",
}


EVENT_TYPES = {"event": "event.received", "storm": "event.storm"}


def build_payload(note: Notification, now: datetime) -> dict:
    if note.alarm_id is None:
        return build_event_payload(note, now)
    alarm = note.alarm
    site, lock = alarm.site, alarm.lock
    zone = site_zone(site)

    def when(value):
        return value.astimezone(zone).isoformat() if value else None

    return {
        "type": TYPES[note.change],
        "timestamp": now.isoformat().replace("+00:00", "Z"),
        "data": {
            "alarm_id": alarm.pk,
            "kind": alarm.kind,
            "kind_name": alarm_kind_names().get(alarm.kind, alarm.kind),
            "severity": alarm.severity,
            "state": alarm.state,
            "subject": alarm.subject,
            "site": _site_data(site),
            "lock": _lock_data(lock),
            "raised_at": when(alarm.raised_at),
            "last_raised_at": when(alarm.last_raised_at),
            "cleared_at": when(alarm.cleared_at),
            "occurrences": note.occurrences,
            "notification_id": note.pk,
            "rule": note.rule.name,
            "url": admin_link("admin:portal_alarm_change", alarm.pk),
        },
    }


def _site_data(site: Site | None) -> dict | None:
    return {"id": site.pk, "name": site.name, "timezone": site.timezone} if site else None


def _lock_data(lock) -> dict | None:
    return {"id": lock.pk, "name": lock.name, "vendor": lock.vendor, "external_id": lock.external_id} if lock else None


def build_event_payload(note: Notification, now: datetime) -> dict:
    """An event a rule names by type: what happened, where and to whom, and the vendor's event as
    stored (secrets already redacted). A storm summary carries the latest event and the count."""
    event, site = note.event, note.site
    activity = Activity.objects.select_related("lock", "resident").filter(event=event).first()
    noticed = EventNotice.objects.select_related("lock").filter(event=event).first()
    lock = (activity.lock if activity else None) or (noticed.lock if noticed else None)
    zone = site_zone(site)
    occurred = event.occurred_at or event.received_at
    return {
        "type": EVENT_TYPES[note.change],
        "timestamp": now.isoformat().replace("+00:00", "Z"),
        "data": {
            "event_id": event.pk,
            "source": event.source,
            "event_type": event.event_type,
            "occurred_at": occurred.astimezone(zone).isoformat(),
            "site": _site_data(site),
            "lock": _lock_data(lock),
            "activity": {
                "action": activity.action,
                "result": activity.result,
                "method": activity.method,
                "actor": activity.actor,
                "resident": activity.resident.name if activity.resident else None,
            }
            if activity
            else None,
            "occurrences": note.occurrences,
            "notification_id": note.pk,
            "rule": note.rule.name,
            "url": admin_link("admin:events_event_change", event.pk),
            "payload": event.payload,
        },
    }


class Outcome:
    def __init__(self, ok=False, status_code=None, error="", response="", retry_after=None):
        self.ok, self.status_code, self.error = ok, status_code, error
        self.response, self.retry_after = response, retry_after

    def summary(self) -> str:
        return f"HTTP {self.status_code}" if self.status_code else self.error or "failed"


def sign(secret: str, message_id: str, body: str) -> dict[str, str]:
    sent_at = datetime.now(tz=UTC)  # the real time: receivers check it against theirs
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": standardwebhooks.Webhook(secret).sign(message_id, sent_at, body),
    }


def _post_webhook(note: Notification, rule: NotificationRule) -> Outcome:
    body = json.dumps(note.payload, separators=(",", ":"))
    headers = {"Content-Type": "application/json", "User-Agent": "portal-notifications/1"}
    headers |= sign(rule.secret, note.message_id, body)
    try:
        with _http_session().post(
            rule.url,
            proxies=_proxies(rule.url),
            data=body.encode(),
            headers=headers,
            timeout=settings.PORTAL_NOTIFY_WEBHOOK_TIMEOUT_SECONDS,
            allow_redirects=False,
            stream=True,
        ) as response:
            kept = response.raw.read(RESPONSE_KEPT, decode_content=True) or b""
            text = kept.decode("utf-8", "replace")
            retry_after = None
            if response.status_code in (429, 503):
                retry_after = _retry_after(response.headers.get("Retry-After"))
            return Outcome(200 <= response.status_code < 300, response.status_code, "", text, retry_after)
    except requests.RequestException as exc:
        return Outcome(error=f"{exc.__class__.__name__}: {exc}")


_http = threading.local()


def _http_session() -> requests.Session:
    """One session per sending thread: its connections to receivers are kept alive and reused.

    The environment (proxies, a CA bundle) is read once per thread and URL, not on every send as
    requests does by default: that look-up cost more than the rest of a send to a fast receiver.
    """
    if getattr(_http, "session", None) is None:
        session = requests.Session()
        session.trust_env = False
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        _http.session, _http.proxies = session, {}
    return _http.session


def _proxies(url: str) -> dict:
    """The proxies the environment names for this URL (HTTPS_PROXY, NO_PROXY…), remembered per thread."""
    _http_session()
    known = _http.proxies
    if url not in known:
        if len(known) > 1000:
            known.clear()
        known[url] = requests.utils.get_environ_proxies(url)
    return known[url]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(tz=UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def _send_email(note: Notification) -> Outcome:
    if note.alarm_id is None:
        return _send_event_email(note)
    alarm = note.alarm
    data = note.payload["data"]
    zone = site_zone(alarm.site)
    moment = alarm.cleared_at if note.change == "cleared" else alarm.last_raised_at or alarm.raised_at
    context = {
        "note": note,
        "alarm": alarm,
        "data": data,
        "change": note.change,
        "site": alarm.site,
        "where": alarm.lock.name
        if alarm.lock_id and alarm.lock.name
        else (str(alarm.lock) if alarm.lock_id else alarm.subject),
        "local_time": f"{moment.astimezone(zone):%Y-%m-%d %H:%M:%S}" if moment else "unknown",
        "timezone": str(zone),
        "link": data["url"],
    }
    return _email(note, "alarm", context)


def _send_event_email(note: Notification) -> Outcome:
    """Told from the body fixed at the first try, so every retry says the same."""
    data = note.payload["data"]
    activity = data["activity"] or {}
    where = (data["lock"] or {}).get("name") or (data["lock"] or {}).get("external_id") or ""
    context = {
        "note": note,
        "data": data,
        "change": note.change,
        "site": data["site"],
        "where": where,
        "activity": activity,
        "local_time": datetime.fromisoformat(data["occurred_at"]).strftime("%Y-%m-%d %H:%M:%S"),
        "timezone": data["site"]["timezone"] if data["site"] else "UTC",
        "link": data["url"],
    }
    return _email(note, "event", context)


def _email(note: Notification, template: str, context: dict) -> Outcome:
    message = EmailMultiAlternatives(
        render_to_string(f"notifications/{template}_subject.txt", context).strip().replace("\n", " "),
        render_to_string(f"notifications/{template}.txt", context),
        settings.DEFAULT_FROM_EMAIL,
        [note.recipient],
        headers={"Message-ID": f"<{note.message_id}@portal>"},
    )
    message.attach_alternative(render_to_string(f"notifications/{template}.html", context), "text/html")
    try:
        message.send()
    except Exception as exc:  # SMTP refused, unreachable, …: kept on the attempt and retried
        return Outcome(error=f"{exc.__class__.__name__}: {exc}")
    return Outcome(ok=True)

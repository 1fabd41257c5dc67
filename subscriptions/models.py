"""PDK connections and the portal's mirror of each PDK webhook subscription, with its sync state."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from subscriptions import topics

SCOPE_OU, SCOPE_RECURSIVE = "ou", "ouRecursive"
# The fields of PDK's subscription object the portal decides (the rest PDK reports: id, userId, odometer).
CONFIG_FIELDS = [
    "name",
    "url",
    "scope",
    "auth_type",
    "auth_user",
    "auth_password",
    "events",
    "active",
    "ssl_verification",
    "secrecy_level",
    "expires_at",
    "secret",
]


def default_scope() -> str:
    return SCOPE_RECURSIVE


class PdkConnection(models.Model):
    """One PDK organization the portal talks to with an OAuth client of its own."""

    name = models.CharField(max_length=100, unique=True)
    org_id = models.CharField("organization id", max_length=100)
    client_id = models.CharField("OAuth client id", max_length=200)
    client_secret = models.CharField("OAuth client secret", max_length=255, help_text="Write-only.")
    accounts_url = models.URLField("accounts base URL", default="https://accounts.pdk.io")
    site = models.ForeignKey("portal.Site", null=True, blank=True, on_delete=models.SET_NULL)
    last_reconciled_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, help_text="Why the last reconcile could not list PDK's hooks.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "PDK connection"

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        self.accounts_url = self.accounts_url.rstrip("/")
        super().save(*args, **kwargs)


class PdkSubscription(models.Model):
    """A PDK webhook subscription: the portal's config for it, what PDK reports, and whether they agree."""

    class SyncState(models.TextChoices):
        IN_SYNC = "in_sync", "in sync"
        PENDING_PUSH = "pending_push", "pending push"
        PENDING_DELETE = "pending_delete", "pending delete"
        DRIFTED = "drifted", "drifted"
        ERROR = "error", "error"

    class AuthType(models.TextChoices):
        NONE = "None", "None"
        BASIC = "Basic", "Basic"

    class SecrecyLevel(models.IntegerChoices):
        NO_FILTERING = 0, "0: no filtering"
        NO_CREDENTIALS = 1, "1: exclude PINs and credentials"
        NO_NAMES = 2, "2: exclude PINs, credentials and people's names"

    connection = models.ForeignKey(PdkConnection, on_delete=models.PROTECT, related_name="subscriptions")
    managed = models.BooleanField(
        default=True,
        help_text="Portal-managed: the portal's config wins and deliveries come to the portal. "
        "Imported hooks are not managed: they mirror PDK and are never deleted silently.",
    )
    endpoint = models.OneToOneField(
        "events.Endpoint",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="pdk_subscription",
        help_text="The ingress endpoint PDK delivers to (portal-managed subscriptions only).",
    )
    # PDK's subscription object.
    name = models.CharField(max_length=70)
    url = models.CharField(max_length=2000, blank=True)
    scope = models.JSONField(default=default_scope, help_text="'ou', 'ouRecursive' or a list of panel ids.")
    auth_type = models.CharField("authentication", max_length=5, choices=AuthType.choices, default=AuthType.NONE)
    auth_user = models.CharField("authentication user", max_length=200, blank=True)
    auth_password = models.CharField("authentication password", max_length=200, blank=True)
    events = models.JSONField(default=list)
    active = models.BooleanField(default=True)
    ssl_verification = models.BooleanField("SSL verification", default=True)
    secrecy_level = models.PositiveSmallIntegerField(choices=SecrecyLevel.choices, default=SecrecyLevel.NO_CREDENTIALS)
    expires_at = models.DateTimeField(null=True, blank=True)
    secret = models.CharField(max_length=255, blank=True)
    # What PDK reports.
    remote_id = models.CharField("PDK id", max_length=100, blank=True)
    user_id = models.CharField("PDK user id", max_length=100, blank=True)
    odometer = models.BigIntegerField(null=True, blank=True, help_text="Deliveries PDK has made for this hook.")
    # Sync.
    sync_state = models.CharField(max_length=16, choices=SyncState.choices, default=SyncState.PENDING_PUSH)
    config_version = models.PositiveIntegerField(default=1, help_text="Bumped by every change of the config.")
    last_synced_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    drift = models.JSONField(default=dict, blank=True, help_text="What PDK had that differed, at the last drift.")
    drift_detected_at = models.DateTimeField(null=True, blank=True)
    rotation_pending = models.BooleanField(default=False, help_text="A new secret waits for PDK to confirm it.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["connection", "name"]
        verbose_name = "PDK subscription"
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "remote_id"], condition=~models.Q(remote_id=""), name="pdk_hook_once"
            ),
        ]
        indexes = [models.Index(fields=["sync_state"], name="pdk_subscription_state_idx")]

    def __str__(self) -> str:
        return self.name

    # --- validation: PDK's rules, each on its field --------------------------------------------

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}

        def problem(field: str, message: str) -> None:
            errors.setdefault(field, []).append(message)

        if self.managed:
            self.url = self.portal_url()
        if not self.url:
            problem("url", "A subscription needs a URL.")
        elif not self.url.lower().startswith("https://"):
            where = " (it is PORTAL_PUBLIC_URL + the endpoint's path)" if self.managed else ""
            problem("url", f"PDK requires an https URL; {self.url!r} is not{where}.")

        events = self.events
        if not isinstance(events, list) or not all(isinstance(topic, str) for topic in events):
            problem("events", "Events must be a list of topics.")
            events = []
        elif not events:
            problem("events", "Choose at least one event.")
        unknown = sorted({topic for topic in events if topics.kind_of(topic) is None})
        if unknown:
            problem("events", f"Unknown PDK topics: {', '.join(unknown)}.")
        kinds = {topics.kind_of(topic) for topic in events} - {None}
        if len(kinds) > 1:
            problem("events", "Organization events and panel events cannot be mixed in one subscription.")

        scope = self.scope
        if isinstance(scope, list):
            if not scope or not all(isinstance(panel, str) and panel.strip() for panel in scope):
                problem("scope", "A list scope must name one or more panel ids.")
            elif kinds and kinds != {"panel"}:
                problem("scope", "A list of panel ids is only allowed with panel events.")
        elif scope not in (SCOPE_OU, SCOPE_RECURSIVE):
            problem("scope", "Scope must be 'ou', 'ouRecursive' or a list of panel ids.")

        if self.auth_type == self.AuthType.BASIC:
            if not self.auth_user:
                problem("auth_user", "Basic authentication needs a user.")
            elif ":" in self.auth_user:
                problem("auth_user", "A Basic user cannot contain ':'.")
            if not self.auth_password:
                problem("auth_password", "Basic authentication needs a password.")
        elif self.auth_type == self.AuthType.NONE:
            if self.auth_user or self.auth_password:
                problem("auth_type", "A user and password are only used with Basic authentication.")
        else:
            problem("auth_type", "Authentication must be 'None' or 'Basic'.")

        if self.secrecy_level not in self.SecrecyLevel.values:
            problem("secrecy_level", "Secrecy level must be 0, 1 or 2.")
        if self.expires_at is not None and self._expiry_changed() and self.expires_at <= timezone.now():
            problem("expires_at", "The expiry time must be in the future.")
        if len(self.secret or "") > 255:
            problem("secret", "The secret can be at most 255 characters.")
        if errors:
            raise ValidationError(errors)

    def _expiry_changed(self) -> bool:
        """An expiry in the past is refused when it is set, not when an old one simply passes."""
        if self._state.adding or self.pk is None:
            return True
        stored = type(self).objects.filter(pk=self.pk).values_list("expires_at", flat=True).first()
        return stored != self.expires_at

    # --- the portal's side -------------------------------------------------------------------

    def portal_url(self) -> str:
        """A managed subscription's URL: the ingress endpoint made for it (path known before saving)."""
        endpoint = self.endpoint if self.endpoint_id else self._new_endpoint()
        return settings.PORTAL_PUBLIC_URL + endpoint.path

    def _new_endpoint(self):
        from events.models import Endpoint

        if getattr(self, "_pending_endpoint", None) is None:
            self._pending_endpoint = Endpoint(source="pdk")
        return self._pending_endpoint

    def save_new(self) -> None:
        """Save a subscription created in the portal: its endpoint and secret are generated here."""
        with transaction.atomic():
            if self.managed:
                if not self.secret:
                    self.secret = generate_secret()
                endpoint = self.endpoint if self.endpoint_id else self._new_endpoint()
                self._configure_endpoint(endpoint)
                self.endpoint = endpoint
                self.url = self.portal_url()
            self.sync_state = self.SyncState.PENDING_PUSH
            self.save()
            self.enqueue_push()

    def save_config(self) -> None:
        """Save an edit of the config (never the fields PDK or the sync tasks own) and push it."""
        with transaction.atomic():
            if self.managed and self.endpoint_id:
                self._configure_endpoint(self.endpoint)
                self.url = self.portal_url()
            self.sync_state = self.SyncState.PENDING_PUSH
            self.config_version = models.F("config_version") + 1
            self.save(update_fields=[*CONFIG_FIELDS, "sync_state", "config_version"])
            self.refresh_from_db(fields=["config_version"])
            self.enqueue_push()

    def _configure_endpoint(self, endpoint) -> None:
        endpoint.source = "pdk"
        endpoint.name = f"PDK subscription: {self.name}"[:200]
        endpoint.site = self.connection.site
        endpoint.secret = self.secret
        basic = self.auth_type == self.AuthType.BASIC
        endpoint.basic_username = self.auth_user if basic else ""
        endpoint.basic_password = self.auth_password if basic else ""
        endpoint.save()

    def rotate_secret(self) -> None:
        """A new secret; the old one stays valid at the ingress for the overlap window."""
        with transaction.atomic():
            me = type(self).objects.select_for_update(of=("self",)).select_related("endpoint").get(pk=self.pk)
            if not me.managed or me.endpoint is None:
                raise ValueError("Only portal-managed subscriptions have a secret the portal can rotate.")
            endpoint = me.endpoint
            endpoint.previous_secret = endpoint.secret
            endpoint.previous_secret_expires_at = timezone.now() + overlap()
            endpoint.secret = generate_secret()
            endpoint.save(update_fields=["previous_secret", "previous_secret_expires_at", "secret"])
            me.secret = endpoint.secret
            me.rotation_pending = True
            me.sync_state = self.SyncState.PENDING_PUSH
            me.config_version = models.F("config_version") + 1
            me.save(update_fields=["secret", "rotation_pending", "sync_state", "config_version"])
            me.enqueue_push()
        self.refresh_from_db()

    def deactivate(self) -> None:
        self.active = False
        self.save_config()

    def request_delete(self) -> None:
        """The row stays, pending delete, until PDK confirms the hook is gone."""
        with transaction.atomic():
            type(self).objects.filter(pk=self.pk).update(sync_state=self.SyncState.PENDING_DELETE)
            self.sync_state = self.SyncState.PENDING_DELETE
            pk = self.pk
            transaction.on_commit(lambda: _send("delete_subscription", pk))

    def enqueue_push(self) -> None:
        pk = self.pk
        transaction.on_commit(lambda: _send("push_subscription", pk))

    # --- PDK's object -------------------------------------------------------------------------

    def is_expired(self, now=None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    def pdk_object(self) -> dict[str, Any]:
        """The whole object PDK gets on create and update."""
        authentication: dict[str, Any] = {"type": self.auth_type}
        if self.auth_type == self.AuthType.BASIC:
            authentication.update(user=self.auth_user, password=self.auth_password)
        body: dict[str, Any] = {
            "name": self.name,
            # Managed: always the ingress URL as configured now, so a new PORTAL_PUBLIC_URL reaches PDK.
            "url": self.portal_url() if self.managed and self.endpoint_id else self.url,
            "scope": self.scope,
            "authentication": authentication,
            "events": list(self.events),
            "active": self.active and not self.is_expired(),
            "sslVerification": self.ssl_verification,
            "secrecyLevel": self.secrecy_level,
        }
        # PDK refuses an expiry in the past; a passed expiry has done its work already.
        if self.expires_at is not None and not self.is_expired():
            body["expiresAt"] = self.expires_at.isoformat().replace("+00:00", "Z")
        if self.secret:
            body["secret"] = self.secret
        return body

    def differences(self, hook: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """How PDK's copy differs from the portal's config: {field: {"portal": …, "pdk": …}}.

        Secrets and passwords are never shown, only that they differ.
        """
        wanted = self.pdk_object()
        found: dict[str, dict[str, Any]] = {}
        for key in ("name", "url", "scope", "active", "sslVerification", "secrecyLevel"):
            if key in hook and hook[key] != wanted[key]:
                found[key] = {"portal": wanted[key], "pdk": hook[key]}
        if "events" in hook and sorted(hook["events"] or []) != sorted(wanted["events"]):
            found["events"] = {"portal": sorted(wanted["events"]), "pdk": sorted(hook["events"] or [])}
        auth = hook.get("authentication") if isinstance(hook.get("authentication"), dict) else None
        if auth is not None:
            if auth.get("type") != wanted["authentication"]["type"]:
                found["authentication.type"] = {"portal": wanted["authentication"]["type"], "pdk": auth.get("type")}
            elif self.auth_type == self.AuthType.BASIC:
                if auth.get("user") != self.auth_user:
                    found["authentication.user"] = {"portal": self.auth_user, "pdk": auth.get("user")}
                if "password" in auth and auth["password"] != self.auth_password:
                    found["authentication.password"] = {"portal": "(hidden)", "pdk": "(differs)"}
        if "expiresAt" in hook and not self.is_expired():
            theirs = parse_datetime(hook["expiresAt"]) if isinstance(hook["expiresAt"], str) else None
            if theirs != self.expires_at:
                found["expiresAt"] = {"portal": wanted.get("expiresAt"), "pdk": hook["expiresAt"]}
        if "secret" in hook and (hook["secret"] or "") != (self.secret or ""):
            found["secret"] = {"portal": "(hidden)", "pdk": "(differs)"}
        return found

    def mirror(self, hook: dict[str, Any]) -> None:
        """Copy PDK's object onto this row (imported hooks: PDK is their truth)."""
        auth = hook.get("authentication") if isinstance(hook.get("authentication"), dict) else {}
        expires = hook.get("expiresAt")
        self.name = str(hook.get("name") or "")[:70]
        self.url = str(hook.get("url") or "")[:2000]
        self.scope = hook.get("scope", SCOPE_RECURSIVE)
        self.auth_type = auth.get("type") if auth.get("type") in self.AuthType.values else self.AuthType.NONE
        self.auth_user = str(auth.get("user") or "")[:200]
        self.auth_password = str(auth.get("password") or "")[:200]
        self.events = list(hook.get("events") or [])
        self.active = bool(hook.get("active", True))
        self.ssl_verification = bool(hook.get("sslVerification", True))
        level = hook.get("secrecyLevel", 1)
        self.secrecy_level = level if level in self.SecrecyLevel.values else 1
        self.expires_at = parse_datetime(expires) if isinstance(expires, str) else None
        self.secret = str(hook.get("secret") or "")[:255]
        self.pull_counters(hook)

    def pull_counters(self, hook: dict[str, Any]) -> None:
        self.user_id = str(hook.get("userId") or "")[:100]
        odometer = hook.get("odometer")
        self.odometer = odometer if isinstance(odometer, int) and not isinstance(odometer, bool) else self.odometer


def generate_secret() -> str:
    return secrets.token_urlsafe(32)


def overlap() -> timedelta:
    return timedelta(hours=settings.PORTAL_PDK_SUBSCRIPTION_OVERLAP_HOURS)


def _send(task_name: str, pk: int) -> None:
    """Publish after commit; if the broker is down the row stays pending and reconcile catches up."""
    from subscriptions import tasks  # here: tasks imports this module

    try:
        getattr(tasks, task_name).delay(pk)
    except Exception:  # the broker being down must not fail the admin save
        import logging

        logging.getLogger(__name__).warning("could not enqueue %s(%s); reconcile will catch up", task_name, pk)


# --- Notification rules: who hears about which alarms, and every message and attempt -----------


WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def generate_webhook_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` + base64 of 24 random bytes."""
    import base64

    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


class NotificationRule(models.Model):
    """Which alarms (sites, kinds, severity, event types) reach whom, by email or a signed webhook."""

    class Channel(models.TextChoices):
        EMAIL = "email"
        WEBHOOK = "webhook"

    name = models.CharField(max_length=200, unique=True)
    active = models.BooleanField(default=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Emailed when the rule's webhook is disabled.",
    )
    sites = models.ManyToManyField("portal.Site", blank=True, help_text="None chosen: every site.")
    # Triggers.
    alarm_kinds = models.JSONField(default=list, blank=True, help_text="None chosen: any kind.")
    min_severity = models.CharField(
        "minimum severity",
        max_length=10,
        blank=True,
        choices=[("minor", "minor"), ("major", "major"), ("critical", "critical")],
    )
    event_types = models.JSONField(
        default=list,
        blank=True,
        help_text="Vendor event types (e.g. door.request.denied): each such event notifies; one that raises or "
        "clears an alarm notifies as that alarm.",
    )
    # Channel and recipients.
    channel = models.CharField(max_length=10, choices=Channel.choices, default=Channel.EMAIL)
    emails = models.JSONField(default=list, blank=True)
    users = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="notification_rules")
    url = models.CharField("webhook URL", max_length=2000, blank=True)
    secret = models.CharField("webhook secret", max_length=100, blank=True, help_text="Write-only; shown once.")
    # When.
    quiet_days = models.JSONField(default=list, blank=True, help_text="Weekdays (0 = Monday) quiet hours apply on.")
    quiet_start = models.TimeField(null=True, blank=True, help_text="In the site's timezone.")
    quiet_end = models.TimeField(null=True, blank=True, help_text="Before start: the quiet hours end the next day.")
    critical_in_quiet_hours = models.BooleanField("critical alarms still go through", default=True)
    notify_cleared = models.BooleanField("also notify when cleared", default=False)
    repeat_minutes = models.PositiveIntegerField("repeat every N minutes until acknowledged", null=True, blank=True)
    # The webhook's health.
    webhook_failing_since = models.DateTimeField(null=True, blank=True)
    webhook_last_success_at = models.DateTimeField(null=True, blank=True)
    webhook_disabled_at = models.DateTimeField(null=True, blank=True)
    webhook_disabled_reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from subscriptions import notifications

        notifications.validate_rule(self, users=getattr(self, "_users_for_validation", None))


class EventNotice(models.Model):
    """A processed event whose type some rule names, kept until the rules have heard of it.

    Written in the transaction that processed the event (like portal.AlarmChange for alarms), so
    a broker that is down at the commit delays the notification instead of losing it.
    """

    event = models.OneToOneField("events.Event", on_delete=models.CASCADE, related_name="+")
    # Where its handler found it happened (for events that record no activity: people, hubs, codes).
    site = models.ForeignKey("portal.Site", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    lock = models.ForeignKey("portal.Lock", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    fanned_out_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["id"], name="eventnotice_pending_idx", condition=models.Q(fanned_out_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"notice of event {self.event_id}"


class Notification(models.Model):
    """One message to one recipient about one change of one alarm, or about one event a rule names
    by type; sent by its own task."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        RETRYING = "retrying"
        SENT = "sent"
        DEAD = "dead"
        COALESCED = "coalesced", "coalesced (storm control)"
        SKIPPED = "skipped"

    DUE_STATES = (Status.PENDING, Status.RETRYING)

    rule = models.ForeignKey(NotificationRule, on_delete=models.CASCADE, related_name="notifications")
    recipient = models.CharField(max_length=254, help_text="An email address, or 'webhook'.")
    alarm = models.ForeignKey(
        "portal.Alarm", null=True, blank=True, on_delete=models.CASCADE, related_name="notifications"
    )
    event = models.ForeignKey(
        "events.Event",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="notifications",
        help_text="For a rule's event type: the event (not an alarm) the message is about.",
    )
    occurrence = models.CharField(
        max_length=40, help_text="Which change of the alarm: 1, 2, …, cleared, reminder-1, …; or event, storm-…"
    )
    topic = models.CharField(
        max_length=320,
        blank=True,
        default="",
        db_default="",  # for rows written by workers still running the release before this field
        help_text="What storm control counts together: one alarm subject, or one event type at one door or site.",
    )
    change = models.CharField(max_length=16)
    channel = models.CharField(max_length=10, choices=NotificationRule.Channel.choices)
    site = models.ForeignKey("portal.Site", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    reason = models.CharField(max_length=300, blank=True, help_text="Why it was skipped, coalesced or dead.")
    digest = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="coalesced", help_text="Storm summary."
    )
    occurrences = models.PositiveIntegerField(default=1, help_text="The occurrence count the message carries.")
    message_id = models.CharField(max_length=40, blank=True, help_text="webhook-id: the same on every try.")
    payload = models.JSONField(null=True, blank=True, help_text="The body, fixed at the first try.")
    attempts = models.PositiveSmallIntegerField(default=0)
    due_at = models.DateTimeField(help_text="When it was first to go out.")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["rule", "recipient", "alarm", "occurrence"], name="notification_once"),
            models.UniqueConstraint(
                fields=["rule", "recipient", "event", "occurrence"],
                condition=models.Q(event__isnull=False),
                name="event_notification_once",
            ),
            models.CheckConstraint(
                condition=models.Q(alarm__isnull=True, event__isnull=False)
                | models.Q(alarm__isnull=False, event__isnull=True),
                name="notification_about_an_alarm_or_an_event",
            ),
        ]
        indexes = [
            models.Index(fields=["-created_at", "-id"], name="notification_recent_idx"),
            models.Index(fields=["status", "next_attempt_at"], name="notification_due_idx"),
            models.Index(fields=["rule", "recipient", "topic", "-due_at"], name="notification_topic_idx"),
            # The sends in flight per rule, counted before every send: only the few being sent.
            models.Index(fields=["rule"], condition=models.Q(status="sending"), name="notification_in_flight_idx"),
        ]

    def __str__(self) -> str:
        about = f"alarm {self.alarm_id}" if self.alarm_id else f"event {self.event_id}"
        return f"{self.change} {about} to {self.recipient}"


class NotificationAttempt(models.Model):
    """One try at sending a notification: when, how long, and what came back."""

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="attempt_set")
    number = models.PositiveSmallIntegerField(help_text="In its series: a resend starts again at 1.")
    at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    response = models.TextField(blank=True, help_text="The first 2 KB of the answer.")
    succeeded = models.BooleanField(default=False)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["-at", "-id"], name="attempt_recent_idx")]

    def __str__(self) -> str:
        return f"try {self.number} of {self.notification_id}"

"""What operators see of PDK subscriptions: connections, subscriptions, their sync state, and actions."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from portal.admin_base import SiteScopedAdmin, site_filter, visible_site_ids
from portal.models import Site
from subscriptions import tasks, topics
from subscriptions.models import SCOPE_OU, SCOPE_RECURSIVE, PdkConnection, PdkSubscription
from subscriptions.pdk_client import PdkClient, PdkError

State = PdkSubscription.SyncState
STATE_COLOURS = {State.IN_SYNC: "#080", State.PENDING_PUSH: "#a60", State.PENDING_DELETE: "#a60"}


def _masked(value: str) -> str:
    return "set" if value else "not set"


class PdkConnectionForm(forms.ModelForm):
    """The client secret is write-only: never rendered; a blank field keeps the stored one."""

    client_secret = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False))
    accounts_url = forms.URLField(assume_scheme="https", initial="https://accounts.pdk.io")

    class Meta:
        model = PdkConnection
        fields = ["name", "org_id", "client_id", "client_secret", "accounts_url", "site"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.editing = self.instance.pk is not None
        field = self.fields["client_secret"]
        field.required = not self.editing
        if self.editing:
            field.help_text = f"Currently {_masked(self.instance.client_secret)}; leave blank to keep it."

    def _post_clean(self):
        if self.editing and not self.cleaned_data.get("client_secret"):
            stored = PdkConnection.objects.filter(pk=self.instance.pk).values_list("client_secret", flat=True).first()
            self.cleaned_data["client_secret"] = stored or ""
        super()._post_clean()


@admin.register(PdkConnection)
class PdkConnectionAdmin(SiteScopedAdmin):
    form = PdkConnectionForm
    list_display = ["name", "org_id", "site", "accounts_url", "last_reconciled_at", "last_error"]
    list_select_related = ["site"]
    search_fields = ["name", "=org_id"]
    readonly_fields = ["last_reconciled_at", "last_error", "created_at"]
    actions = ["test_connection", "sync_now"]

    @admin.action(description="Test connection (fetch a token and list hooks)")
    def test_connection(self, request, queryset):
        for connection in queryset:
            message, level = test_connection(connection)
            self.message_user(request, f"{connection.name}: {message}", level)

    @admin.action(description="Sync now (reconcile with PDK)")
    def sync_now(self, request, queryset):
        for connection in queryset:
            tasks.reconcile_connection.delay(connection.pk)
        self.message_user(request, f"Reconcile queued for {len(queryset)} connection(s).", messages.SUCCESS)


def test_connection(connection: PdkConnection) -> tuple[str, int]:
    """Fetch a token, then list hooks; the message says which step failed and what PDK said."""
    client = PdkClient(connection)
    try:
        client.forget_token(client.token())  # a fresh token proves the credentials, not the cache
        client.token()
    except PdkError as exc:
        return f"could not get a token: {exc}", messages.ERROR
    try:
        hooks = client.list_hooks()
    except PdkError as exc:
        return f"token OK, but could not list hooks of organization {connection.org_id}: {exc}", messages.ERROR
    return f"OK: token fetched, {len(hooks)} hook(s) on PDK.", messages.SUCCESS


def _event_choices():
    return [
        ("Organization events", [(topic, topic) for topic in sorted(topics.ORGANIZATION_TOPICS)]),
        ("Panel events", [(topic, topic) for topic in sorted(topics.PANEL_TOPICS)]),
    ]


class ScopeField(forms.CharField):
    """'ou', 'ouRecursive', or panel ids separated by commas (a list, as PDK takes it)."""

    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, list) else value

    def to_python(self, value):
        text = (super().to_python(value) or "").strip()
        if text in (SCOPE_OU, SCOPE_RECURSIVE):
            return text
        return [panel.strip() for panel in text.split(",") if panel.strip()]


class PdkSubscriptionForm(forms.ModelForm):
    """Url and secret are the portal's own for a managed subscription; the password is write-only."""

    events = forms.MultipleChoiceField(choices=_event_choices, widget=forms.CheckboxSelectMultiple)
    scope = ScopeField(
        initial=SCOPE_RECURSIVE,
        help_text="'ou' (this organization), 'ouRecursive' (and its children), or panel ids separated by commas "
        "(panel events only).",
    )
    auth_password = forms.CharField(
        label="Authentication password", required=False, widget=forms.PasswordInput(render_value=False)
    )

    class Meta:
        model = PdkSubscription
        fields = [
            "connection",
            "name",
            "events",
            "scope",
            "auth_type",
            "auth_user",
            "auth_password",
            "active",
            "ssl_verification",
            "secrecy_level",
            "expires_at",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.editing = self.instance.pk is not None
        # A view-only page (imported hooks) has no form fields at all.
        if self.editing and "connection" in self.fields:
            self.fields["connection"].disabled = True
            password = self.fields["auth_password"]
            password.help_text = f"Currently {_masked(self.instance.auth_password)}; leave blank to keep it."

    def _post_clean(self):
        data = self.cleaned_data
        if data.get("auth_type") == PdkSubscription.AuthType.NONE:
            data["auth_user"], data["auth_password"] = "", ""
        elif self.editing and not data.get("auth_password"):
            stored = PdkSubscription.objects.filter(pk=self.instance.pk).values_list("auth_password", flat=True)
            data["auth_password"] = stored.first() or ""
        super()._post_clean()


@admin.register(PdkSubscription)
class PdkSubscriptionAdmin(SiteScopedAdmin):
    site_paths = ("connection__site",)
    form = PdkSubscriptionForm
    list_display = ["name", "connection", "managed", "state_badge", "active", "topics", "last_synced_at", "error"]
    list_filter = ["sync_state", "managed", "active", ("connection", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["connection"]
    search_fields = ["name", "=remote_id"]
    show_full_result_count = False
    actions = ["sync_now", "rotate_secret", "deactivate"]
    status_fields = [
        "managed",
        "url",
        "secret_status",
        "endpoint_link",
        "remote_id",
        "user_id",
        "odometer",
        "state_badge",
        "last_synced_at",
        "last_error",
        "drift_pretty",
        "drift_detected_at",
    ]
    readonly_fields = status_fields

    def get_fieldsets(self, request, obj=None):
        config = list(self.form.Meta.fields)
        if obj is not None and not obj.managed:
            config.remove("auth_password")  # shown read-only here: a password is never shown
        sections = [(None, {"fields": config})]
        if obj is not None:
            sections.append(("PDK and sync", {"fields": self.status_fields}))
        return sections

    def has_change_permission(self, request, obj=None):
        # Imported hooks belong to whoever made them in PDK: shown here, edited there.
        if obj is not None and not obj.managed:
            return False
        return super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        if change:
            obj.save_config()
        else:
            obj.save_new()

    def delete_model(self, request, obj):
        obj.request_delete()

    def delete_queryset(self, request, queryset):
        for subscription in queryset:
            subscription.request_delete()

    def response_delete(self, request, obj_display, obj_id):
        self.message_user(request, "The hook is deleted on PDK first; the row goes when PDK confirms.")
        return super().response_delete(request, obj_display, obj_id)

    @admin.action(description="Sync now")
    def sync_now(self, request, queryset):
        connections = set()
        for subscription in queryset:
            if subscription.sync_state == State.PENDING_DELETE:
                tasks.delete_subscription.delay(subscription.pk)
            elif subscription.managed:
                tasks.push_subscription.delay(subscription.pk)
            else:
                connections.add(subscription.connection_id)
        for pk in connections:
            tasks.reconcile_connection.delay(pk)
        self.message_user(request, f"Sync queued for {len(queryset)} subscription(s).", messages.SUCCESS)

    @admin.action(description="Rotate secret (the old one stays valid for the overlap window)")
    def rotate_secret(self, request, queryset):
        done = 0
        for subscription in queryset:
            if subscription.managed and subscription.endpoint_id:
                subscription.rotate_secret()
                done += 1
            else:
                self.message_user(request, f"{subscription}: imported hooks keep their own secret.", messages.WARNING)
        if done:
            self.message_user(request, f"New secret generated and being pushed for {done} subscription(s).")

    @admin.action(description="Deactivate")
    def deactivate(self, request, queryset):
        done = 0
        for subscription in queryset.filter(managed=True).exclude(sync_state=State.PENDING_DELETE):
            subscription.deactivate()
            done += 1
        self.message_user(request, f"{done} subscription(s) deactivated; pushing to PDK.", messages.SUCCESS)

    @admin.display(description="sync state", ordering="sync_state")
    def state_badge(self, obj: PdkSubscription) -> str:
        colour = STATE_COLOURS.get(obj.sync_state, "#b00")
        return format_html('<strong style="color:{}">{}</strong>', colour, obj.get_sync_state_display())

    @admin.display(description="events")
    def topics(self, obj: PdkSubscription) -> str:
        events = obj.events or []
        return ", ".join(events[:3]) + (f" (+{len(events) - 3})" if len(events) > 3 else "")

    @admin.display(description="last error")
    def error(self, obj: PdkSubscription) -> str:
        return obj.last_error[:120]

    @admin.display(description="secret")
    def secret_status(self, obj: PdkSubscription) -> str:
        text = _masked(obj.secret)
        return text + (" (new secret waiting for PDK to confirm)" if obj.rotation_pending else "")

    @admin.display(description="ingress endpoint")
    def endpoint_link(self, obj: PdkSubscription) -> str:
        if not obj.endpoint_id:
            return "none (not managed by the portal)"
        url = reverse("admin:events_endpoint_change", args=[obj.endpoint_id])
        return format_html('<a href="{}">{}</a>', url, obj.endpoint_id)

    @admin.display(description="drift (what PDK had)")
    def drift_pretty(self, obj: PdkSubscription) -> str:
        if not obj.drift:
            return "none"
        return format_html("<pre style='white-space:pre-wrap'>{}</pre>", json.dumps(obj.drift, indent=2))


# --- Notification rules, notifications and their attempts -----------------------------------------

from subscriptions import notifications  # noqa: E402 (the notification half of this module)
from subscriptions.models import (  # noqa: E402
    WEEKDAYS,
    Notification,
    NotificationAttempt,
    NotificationRule,
    generate_webhook_secret,
)


class CommaListField(forms.CharField):
    """A list of strings, typed separated by commas."""

    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, list) else value

    def to_python(self, value):
        text = super().to_python(value) or ""
        return [item.strip() for item in text.split(",") if item.strip()]


class NotificationRuleForm(forms.ModelForm):
    alarm_kinds = forms.MultipleChoiceField(
        choices=lambda: list(notifications.alarm_kind_names().items()),
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="None chosen: any kind (with a minimum severity).",
    )
    event_types = CommaListField(
        required=False,
        help_text="Vendor event types separated by commas, e.g. door.request.denied, lock.unlocked: each such "
        "event notifies (one that raises or clears an alarm notifies as that alarm).",
    )
    emails = CommaListField(required=False, help_text="Email addresses separated by commas.")
    quiet_days = forms.TypedMultipleChoiceField(
        choices=list(enumerate(WEEKDAYS)), coerce=int, widget=forms.CheckboxSelectMultiple, required=False
    )

    class Meta:
        model = NotificationRule
        fields = [
            "name",
            "active",
            "owner",
            "sites",
            "alarm_kinds",
            "min_severity",
            "event_types",
            "channel",
            "emails",
            "users",
            "url",
            "notify_cleared",
            "repeat_minutes",
            "quiet_days",
            "quiet_start",
            "quiet_end",
            "critical_in_quiet_hours",
        ]

    def _post_clean(self):
        # The model's validation counts the users being chosen here as recipients.
        self.instance._users_for_validation = list(self.cleaned_data.get("users") or [])
        super()._post_clean()


class AttemptInline(admin.TabularInline):
    model = NotificationAttempt
    extra = 0
    can_delete = False
    fields = ["number", "at", "duration_ms", "status_code", "error", "response", "succeeded"]
    readonly_fields = fields
    ordering = ["number"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(NotificationRule)
class NotificationRuleAdmin(SiteScopedAdmin):
    site_paths = ("sites",)  # a rule for every site (none chosen) is a superuser's
    form = NotificationRuleForm
    list_display = ["name", "channel", "active", "triggers", "webhook_state", "created_at"]
    list_filter = ["channel", "active"]
    search_fields = ["name"]
    filter_horizontal = ["sites", "users"]
    readonly_fields = [
        "secret_status",
        "webhook_failing_since",
        "webhook_last_success_at",
        "webhook_disabled_at",
        "webhook_disabled_reason",
    ]
    actions = ["rotate_secret", "enable_webhook", "resend_dead"]

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        sites = visible_site_ids(request)
        if db_field.name == "sites" and sites is not None:
            kwargs["queryset"] = Site.objects.filter(pk__in=sites)
            kwargs["required"] = True  # "every site" is a superuser's rule
            kwargs["help_text"] = "The sites this rule watches (yours)."
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def get_fieldsets(self, request, obj=None):
        sections = [(None, {"fields": self.form.Meta.fields})]
        if obj is not None and obj.channel == NotificationRule.Channel.WEBHOOK:
            sections.append(("Webhook", {"fields": self.readonly_fields}))
        return sections

    def save_model(self, request, obj, form, change):
        if not change and obj.owner_id is None:
            obj.owner = request.user
        fresh_secret = obj.channel == NotificationRule.Channel.WEBHOOK and not obj.secret
        if fresh_secret:
            obj.secret = generate_webhook_secret()
        if obj.channel != NotificationRule.Channel.WEBHOOK:
            obj.secret = ""
        super().save_model(request, obj, form, change)
        if fresh_secret:
            self._show_secret(request, obj)

    def _show_secret(self, request, obj):
        self.message_user(
            request,
            f"Signing secret of {obj.name!r}, shown only this once; give it to the receiver: {obj.secret}",
            messages.WARNING,
        )

    @admin.action(description="Rotate the webhook secret (shown once)")
    def rotate_secret(self, request, queryset):
        for rule in queryset.filter(channel=NotificationRule.Channel.WEBHOOK):
            rule.secret = generate_webhook_secret()
            rule.save(update_fields=["secret"])
            self._show_secret(request, rule)

    @admin.action(description="Enable webhook again")
    def enable_webhook(self, request, queryset):
        for rule in queryset:
            notifications.enable_webhook(rule)
        self.message_user(request, f"Webhook enabled again for {len(queryset)} rule(s).", messages.SUCCESS)

    @admin.action(description="Resend all dead for this rule")
    def resend_dead(self, request, queryset):
        count = notifications.resend(Notification.objects.filter(rule__in=queryset, status=Notification.Status.DEAD))
        self.message_user(request, f"{count} dead notification(s) queued again.", messages.SUCCESS)

    @admin.display(description="triggers")
    def triggers(self, obj: NotificationRule) -> str:
        parts = list(obj.alarm_kinds) + ([f"≥ {obj.min_severity}"] if obj.min_severity else []) + obj.event_types
        return ", ".join(parts)[:120]

    @admin.display(description="webhook")
    def webhook_state(self, obj: NotificationRule) -> str:
        if obj.channel != NotificationRule.Channel.WEBHOOK:
            return "-"
        if obj.webhook_disabled_at:
            return format_html('<strong style="color:#b00">disabled</strong> ({})', obj.webhook_disabled_reason)
        if obj.webhook_failing_since:
            return format_html('<span style="color:#a60">failing since {}</span>', obj.webhook_failing_since)
        return "ok"

    @admin.display(description="secret")
    def secret_status(self, obj: NotificationRule) -> str:
        return _masked(obj.secret) + " (write-only: rotate it to see a new one once)"


NOTE_COLOURS = {"sent": "#080", "dead": "#b00", "retrying": "#a60", "sending": "#a60"}


@admin.register(Notification)
class NotificationAdmin(SiteScopedAdmin):
    list_display = [
        "id",
        "created_at",
        "rule",
        "site",
        "channel",
        "recipient",
        "change",
        "about",
        "status_badge",
        "attempts",
        "next_attempt_at",
        "reason",
    ]
    list_filter = [
        "status",
        "channel",
        ("rule", admin.RelatedOnlyFieldListFilter),
        site_filter(),
        ("created_at", admin.DateFieldListFilter),
    ]
    list_select_related = ["rule", "site", "alarm", "alarm__lock", "event"]
    search_fields = ["=recipient", "=alarm__id", "=event__id"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    inlines = [AttemptInline]
    actions = ["resend", "resend_dead_for_rule"]
    readonly_fields = [
        "rule",
        "recipient",
        "about_link",
        "occurrence",
        "change",
        "channel",
        "site",
        "status",
        "reason",
        "digest",
        "occurrences",
        "message_id",
        "payload_pretty",
        "attempts",
        "due_at",
        "next_attempt_at",
        "sent_at",
        "created_at",
    ]
    fields = readonly_fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        # The list names the event; its vendor payload (kilobytes a row) stays in the database.
        return super().get_queryset(request).defer("event__payload", "event__payload_flags")

    @admin.action(description="Resend", permissions=["view"])
    def resend(self, request, queryset):
        count = notifications.resend(queryset)
        self.message_user(request, f"{count} notification(s) queued again.", messages.SUCCESS)

    @admin.action(description="Resend all dead for this rule", permissions=["view"])
    def resend_dead_for_rule(self, request, queryset):
        rules = set(queryset.values_list("rule_id", flat=True))
        count = notifications.resend(Notification.objects.filter(rule__in=rules, status=Notification.Status.DEAD))
        self.message_user(request, f"{count} dead notification(s) of {len(rules)} rule(s) queued again.")

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Notification) -> str:
        return format_html('<strong style="color:{}">{}</strong>', NOTE_COLOURS.get(obj.status, "#555"), obj.status)

    @admin.display(description="about")
    def about(self, obj: Notification) -> str:
        return str(obj.alarm) if obj.alarm_id else str(obj.event)

    @admin.display(description="about")
    def about_link(self, obj: Notification) -> str:
        if obj.alarm_id:
            return format_html(
                '<a href="{}">{}</a>', reverse("admin:portal_alarm_change", args=[obj.alarm_id]), obj.alarm
            )
        return format_html('<a href="{}">{}</a>', reverse("admin:events_event_change", args=[obj.event_id]), obj.event)

    @admin.display(description="body")
    def payload_pretty(self, obj: Notification) -> str:
        if obj.payload is None:
            return "not built yet (fixed at the first try)"
        return format_html("<pre style='white-space:pre-wrap'>{}</pre>", json.dumps(obj.payload, indent=2))


@admin.register(NotificationAttempt)
class NotificationAttemptAdmin(SiteScopedAdmin):
    site_paths = ("notification__site",)
    list_display = ["at", "notification", "number", "status_code", "error", "duration_ms", "succeeded"]
    list_filter = [
        "succeeded",
        "notification__channel",
        ("notification__rule", admin.RelatedOnlyFieldListFilter),
        site_filter("notification__site"),
        ("at", admin.DateFieldListFilter),
    ]
    list_select_related = ["notification"]
    show_full_result_count = False
    readonly_fields = ["notification", "number", "at", "duration_ms", "status_code", "error", "response", "succeeded"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

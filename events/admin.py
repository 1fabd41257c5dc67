"""What operators see of inbound traffic: endpoints, events, raw deliveries, rejected requests."""

import json

from django import forms
from django.contrib import admin, messages
from django.db.models import Q
from django.urls import reverse
from django.utils.html import format_html

from events import processing, sources
from events.models import Delivery, Endpoint, Event, RejectedRequest
from events.sources.base import InvalidPayload, parse_json_object, redact
from portal.admin_base import EstimatedCountPaginator, ReadOnlyAdmin, SiteScopedAdmin, site_filter

SECRET_FIELDS = ("secret", "basic_password")


def masked(value: str) -> str:
    """Enough to recognise a secret, never enough to use it."""
    if not value:
        return "not set"
    return f"set (…{value[-4:]})" if len(value) >= 12 else "set"


class EndpointForm(forms.ModelForm):
    """Secrets are write-only: the form never renders them, and a blank field keeps the stored one."""

    secret = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False))
    basic_password = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False))
    clear_secrets = forms.BooleanField(required=False, label="Remove the stored secret and Basic password")

    class Meta:
        model = Endpoint
        fields = [
            "source",
            "name",
            "site",
            "active",
            "secret",
            "basic_username",
            "basic_password",
            "token_header",
            "partner_id",
            "unauthenticated",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # UUID primary keys exist before saving, so "is this an edit?" is asked of _state.
        self.editing = not self.instance._state.adding
        for name in SECRET_FIELDS:
            field = self.fields[name]
            field.help_text = Endpoint._meta.get_field(name).help_text
            if self.editing:
                field.help_text += f" Currently {masked(getattr(self.instance, name))}; leave blank to keep it."
        if self.editing:
            self.fields["source"].disabled = True

    def _post_clean(self):
        # Blank secret inputs mean "keep": put the stored values back before the model validates.
        if self.editing and not self.cleaned_data.get("clear_secrets"):
            stored = Endpoint.objects.filter(pk=self.instance.pk).values(*SECRET_FIELDS).first() or {}
            for name in SECRET_FIELDS:
                if not self.cleaned_data.get(name):
                    self.cleaned_data[name] = stored.get(name, "")
        super()._post_clean()


@admin.register(Endpoint)
class EndpointAdmin(SiteScopedAdmin):
    form = EndpointForm
    list_display = ["name", "source", "site", "active", "verification_badge", "webhook_url"]
    list_filter = ["source", "active", site_filter()]
    list_select_related = ["site"]
    search_fields = ["name", "=id"]
    readonly_fields = ["webhook_url", "verification_badge", "created_at"]

    def has_delete_permission(self, request, obj=None):
        # Deactivate instead: deleting would rewrite every event and delivery that names it.
        return False

    def get_fieldsets(self, request, obj=None):
        verification = ["secret", "basic_username", "basic_password", "token_header", "partner_id", "unauthenticated"]
        if obj is not None:
            verification.append("clear_secrets")
        return [
            (None, {"fields": ["source", "name", "site", "active"]}),
            ("Verification", {"fields": verification, "description": "Secrets are write-only."}),
            ("Where the vendor posts", {"fields": ["webhook_url", "verification_badge", "created_at"]}),
        ]

    @admin.display(description="verification")
    def verification_badge(self, obj: Endpoint) -> str:
        if obj.unauthenticated:
            return format_html('<strong style="color:#b00">⚠ {}</strong>', obj.verification)
        return obj.verification

    @admin.display(description="URL to give the vendor")
    def webhook_url(self, obj: Endpoint) -> str:
        return "(shown once saved)" if obj._state.adding else obj.url


def _pretty(value) -> str:
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False)
    except (RecursionError, ValueError):
        text = "(nested too deeply to show here: see the raw delivery)"
    return format_html("<pre style='white-space:pre-wrap;max-width:90em'>{}</pre>", text)


class EventTypeFilter(admin.SimpleListFilter):
    """Event types from the vendors' catalogs (HANDLERS and IGNORED): no DISTINCT over a million rows."""

    title = "event type"
    parameter_name = "event_type__exact"

    def lookups(self, request, model_admin):
        types = set()
        for code, _ in sources.CHOICES:
            module = sources.get(code)
            types |= module.HANDLERS.keys() | module.IGNORED.keys()
        return [(name, name) for name in sorted(types)]

    def queryset(self, request, queryset):
        return queryset.filter(event_type=self.value()) if self.value() else queryset


@admin.register(Event)
class EventAdmin(SiteScopedAdmin, ReadOnlyAdmin):
    site_paths = ("endpoint__site",)  # an event belongs to the site of the endpoint it came in on
    list_display = ["id", "received_at", "source", "event_type", "status", "attempts", "occurred_at", "endpoint"]
    list_filter = ["source", "status", "received_at", EventTypeFilter]
    list_select_related = ["endpoint"]
    search_fields = ["=dedup_key", "=event_type", "=message_id"]
    paginator = EstimatedCountPaginator

    def get_search_results(self, request, queryset, search_term):
        """Exact matches the indexes answer ((source, dedup_key), (source, event_type, …),
        message_id), not case-folded comparisons that read the whole table."""
        term = search_term.strip()
        if not term:
            return queryset, False
        every = [code for code, _ in sources.CHOICES]
        found = Q(source__in=every, dedup_key=term) | Q(source__in=every, event_type=term) | Q(message_id=term)
        return queryset.filter(found), False

    actions = ["reprocess"]
    fields = [
        "source",
        "event_type",
        "status",
        "attempts",
        "last_error",
        "dedup_key",
        "message_id",
        "occurred_at",
        "received_at",
        "processed_at",
        "enqueued_at",
        "endpoint",
        "flags",
        "payload_pretty",
        "deliveries_link",
    ]
    readonly_fields = fields

    def has_delete_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        # Lists never show the payload; only the change page loads it.
        return queryset if request.resolver_match.url_name.endswith("_change") else queryset.defer("payload")

    @admin.display(description="payload")
    def payload_pretty(self, obj: Event) -> str:
        return _pretty(obj.payload)

    @admin.display(description="payload flags")
    def flags(self, obj: Event) -> str:
        return "; ".join(obj.payload_flags) or "none"

    @admin.display(description="raw deliveries")
    def deliveries_link(self, obj: Event) -> str:
        url = reverse("admin:events_delivery_changelist") + f"?event__id__exact={obj.pk}"
        return format_html('<a href="{}">every request that carried this event</a>', url)

    @admin.action(description="Reprocess the selected events", permissions=["reprocess"])
    def reprocess(self, request, queryset):
        count = processing.replay(queryset)
        self.message_user(request, f"{count} events queued for processing again.", messages.SUCCESS)

    def has_reprocess_permission(self, request):
        return request.user.has_perm("events.reprocess_event")


@admin.register(Delivery)
class DeliveryAdmin(SiteScopedAdmin, ReadOnlyAdmin):
    site_paths = ("endpoint__site",)
    list_display = ["id", "received_at", "endpoint", "event_link", "duplicate", "remote_addr"]
    list_filter = ["duplicate", "received_at", "endpoint__source"]
    list_select_related = ["endpoint", "event"]
    fields = ["received_at", "endpoint", "event_link", "duplicate", "remote_addr", "headers_pretty", "body_text"]
    readonly_fields = fields

    def get_queryset(self, request):
        queryset = super().get_queryset(request).defer("event__payload")
        return queryset if request.resolver_match.url_name.endswith("_change") else queryset.defer("body", "headers")

    @admin.display(description="event")
    def event_link(self, obj: Delivery) -> str:
        url = reverse("admin:events_event_change", args=[obj.event_id])
        return format_html('<a href="{}">{}</a>', url, obj.event)

    @admin.display(description="headers")
    def headers_pretty(self, obj: Delivery) -> str:
        return _pretty(obj.headers)

    @admin.display(description="body, as received (secrets redacted)")
    def body_text(self, obj: Delivery) -> str:
        body = bytes(obj.body)
        module = sources.get(obj.event.source) if obj.event_id else None
        try:
            shown = _pretty(redact(parse_json_object(body), module.SECRET_FIELDS)) if module else None
        except InvalidPayload:
            shown = None
        if shown is None:  # not JSON after all: the bytes as text, with no field to redact
            return format_html(
                "<pre style='white-space:pre-wrap;max-width:90em'>{}</pre>", body.decode("utf-8", "replace")
            )
        return shown


@admin.register(RejectedRequest)
class RejectedRequestAdmin(SiteScopedAdmin, ReadOnlyAdmin):
    site_paths = ("endpoint__site",)
    list_display = ["received_at", "endpoint", "status_code", "reason", "remote_addr"]
    list_filter = ["status_code", "received_at", "endpoint__source"]
    list_select_related = ["endpoint"]
    fields = ["received_at", "endpoint", "status_code", "reason", "remote_addr", "headers_pretty"]
    readonly_fields = fields

    @admin.display(description="headers")
    def headers_pretty(self, obj: RejectedRequest) -> str:
        return _pretty(obj.headers)

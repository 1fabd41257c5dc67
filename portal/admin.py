"""What building managers see of the building model: sites, placements, locks, people, activity, alarms."""

from django import forms
from django.contrib import admin, messages
from django.db.models import Case, Q, QuerySet, Value, When
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.timesince import timesince

from portal import domain
from portal.admin_base import (
    CsvExportAdmin,
    EstimatedCountPaginator,
    ReadOnlyAdmin,
    SiteScopedAdmin,
    distinct_values_filter,
    site_filter,
)
from portal.models import (
    AccessGrant,
    Activity,
    Alarm,
    AlarmOccurrence,
    Camera,
    Credential,
    Hub,
    Intercom,
    Lock,
    Panel,
    Placement,
    Resident,
    Site,
)

RECENT_ROWS = 20  # rows of activity, alarms, grants or keys shown on a lock's or resident's page


def changelist_link(model, text: str, **filters) -> str:
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    return format_html('<a href="{}?{}">{}</a>', url, urlencode(filters), text)


def change_link(obj, text: str | None = None) -> str:
    if obj is None:
        return "—"
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, text or str(obj))


def table(headers: list[str], rows: list[tuple]) -> str:
    """A small read-only table for a change page (rows already escaped or plain values)."""
    if not rows:
        return "—"
    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    body = format_html_join(
        "", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows)
    )
    return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)


def when(moment) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}" if moment else "—"


@admin.register(Site)
class SiteAdmin(SiteScopedAdmin):
    site_paths = ("pk",)
    list_display = ["name", "timezone", "locks", "open_alarms", "created_at"]
    search_fields = ["name"]

    @admin.display(description="locks")
    def locks(self, obj: Site) -> str:
        return changelist_link(Lock, "locks", site__id__exact=obj.pk)

    @admin.display(description="alarms")
    def open_alarms(self, obj: Site) -> str:
        return changelist_link(Alarm, "open alarms", site__id__exact=obj.pk, state__in="active,acknowledged")


class NeedsPlacing(admin.SimpleListFilter):
    title = "placed"
    parameter_name = "placed"

    def lookups(self, request, model_admin):
        return [("no", "Waiting to be placed"), ("yes", "Placed in a site")]

    def queryset(self, request, queryset):
        if self.value() in ("no", "yes"):
            return queryset.filter(site__isnull=self.value() == "no")
        return queryset


@admin.register(Placement)
class PlacementAdmin(SiteScopedAdmin):
    """Panels, hubs, organizations and accounts; a superuser places each in a site."""

    list_display = ["kind", "external_id", "name", "site", "placed", "online", "status", "first_seen_at"]
    list_filter = [NeedsPlacing, "kind", "online", site_filter()]
    list_select_related = ["site"]
    search_fields = ["=external_id", "name"]
    readonly_fields = ["kind", "external_id", "online", "online_as_of", "status", "status_as_of", "details"]
    fields = ["kind", "external_id", "name", "site", *readonly_fields[2:]]

    @admin.display(boolean=True, description="placed")
    def placed(self, obj: Placement) -> bool:
        return obj.site_id is not None

    def has_add_permission(self, request):
        return False  # placements come from vendors' events

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if "site" in form.changed_data:
            domain.place(obj, obj.site)  # placing a panel, hub or account re-homes its locks


@admin.register(Panel)
class PanelAdmin(PlacementAdmin):
    list_display = ["name", "external_id", "site", "online", "online_as_of", "status"]
    list_filter = [NeedsPlacing, "online", site_filter()]


@admin.register(Hub)
class HubAdmin(PlacementAdmin):
    list_display = ["name", "external_id", "site", "status", "status_as_of", "online"]
    list_filter = [NeedsPlacing, "status", site_filter()]
    search_fields = ["=external_id", "name", "details__serial", "details__thingName"]


class VendorFilter(admin.SimpleListFilter):
    """Vendors by their names rather than their codes."""

    title = "vendor"
    parameter_name = "vendor"

    def lookups(self, request, model_admin):
        from events import sources

        return sources.CHOICES

    def queryset(self, request, queryset):
        return queryset.filter(vendor=self.value()) if self.value() else queryset


@admin.register(Lock)
class LockAdmin(SiteScopedAdmin, ReadOnlyAdmin):
    list_display = [
        "__str__",
        "vendor",
        "site",
        "locked",
        "door_open",
        "online",
        "battery_level",
        "battery_status",
        "last_activity_at",
    ]
    list_filter = [VendorFilter, site_filter(), "online", "locked", "door_open", "battery_status"]
    list_select_related = ["site"]
    search_fields = ["name", "=external_id", "details__serialNumber", "details__thingName", "aliases__external_id"]
    fieldsets = [
        (None, {"fields": ["name", "vendor", "external_id", "site", "placement", "removed_at"]}),
        (
            "State (each as of the vendor time beside it)",
            {
                "fields": [
                    ("locked", "locked_as_of"),
                    ("door_open", "door_open_as_of"),
                    ("online", "online_as_of"),
                    ("battery_level", "battery_status", "battery_as_of"),
                    "last_activity_at",
                ]
            },
        ),
        ("What happened here", {"fields": ["open_alarms", "timeline"]}),
        ("Vendor fields", {"fields": ["previous_ids", "details"], "classes": ["collapse"]}),
    ]

    @admin.display(description="timeline")
    def timeline(self, obj: Lock) -> str:
        """Activity, alarms raised and alarms cleared at this door, whatever the vendor, newest first;
        each row links the vendor event it came from. Three queries, RECENT_ROWS rows each at most."""
        rows = [
            (a.occurred_at, f"{a.action} {a.result}".strip(), a.method, a.resident or a.actor, a.event)
            for a in obj.activity.select_related("resident", "event").order_by("-occurred_at", "-id")[:RECENT_ROWS]
        ]
        rows += [
            (o.occurred_at, f"alarm: {o.alarm.kind} ({o.alarm.severity})", "", "", o.event)
            for o in AlarmOccurrence.objects.filter(alarm__lock=obj)
            .select_related("alarm", "event")
            .order_by("-occurred_at")[:RECENT_ROWS]
        ]
        rows += [
            (a.cleared_at, f"alarm cleared: {a.kind}", "", "", a.cleared_by)
            for a in obj.alarms.filter(cleared_at__isnull=False, cleared_by__isnull=False)
            .select_related("cleared_by")
            .order_by("-cleared_at")[:RECENT_ROWS]
        ]
        rows.sort(key=lambda row: row[0], reverse=True)
        shown = table(
            ["when", "what", "method", "who", "vendor event"],
            [
                (when(at), what, method, who, change_link(event, event.event_type))
                for at, what, method, who, event in rows[:RECENT_ROWS]
            ],
        )
        links = format_html(
            "{} · {}",
            changelist_link(Activity, "All activity here", lock__id__exact=obj.pk),
            changelist_link(Alarm, "All alarms here", lock__id__exact=obj.pk),
        )
        return format_html("{}<p>{}</p>", shown, links)

    @admin.display(description="open alarms")
    def open_alarms(self, obj: Lock) -> str:
        rows = obj.alarms.filter(state__in=Alarm.OPEN_STATES).order_by("-last_raised_at")[:RECENT_ROWS]
        return table(
            ["kind", "severity", "state", "occurrences", "raised"],
            [(change_link(a, a.kind), a.severity, a.state, a.occurrences, when(a.raised_at)) for a in rows],
        )

    @admin.display(description="previous ids")
    def previous_ids(self, obj: Lock) -> str:
        return ", ".join(f"{a.external_id} (until {when(a.replaced_at)})" for a in obj.aliases.all()) or "—"


@admin.register(Activity)
class ActivityAdmin(SiteScopedAdmin, CsvExportAdmin, ReadOnlyAdmin):
    export_columns = [
        ("occurred at (UTC)", "occurred_at"),
        ("site", "site__name"),
        ("door or lock", "lock__name"),
        ("vendor", "lock__vendor"),
        ("action", "action"),
        ("result", "result"),
        ("method", "method"),
        ("resident", "resident__name"),
        ("actor", "actor"),
        ("event id", "event_id"),
    ]
    list_display = ["occurred_at", "lock", "site", "action", "result", "method", "who"]
    list_filter = [
        distinct_values_filter("action", "action"),
        distinct_values_filter("result", "result"),
        site_filter(),
        ("occurred_at", admin.DateFieldListFilter),
    ]
    list_select_related = ["lock", "site", "resident"]
    search_fields = ["lock__name", "actor", "resident__name", "resident__email"]
    raw_id_fields = ["event", "lock", "resident"]
    paginator = EstimatedCountPaginator

    def get_search_results(self, request, queryset, search_term):
        """Find the doors and people in their own (small) tables first, then their activity by id,
        rather than a LIKE across joins over every activity row."""
        term = search_term.strip()
        if not term:
            return queryset, False
        locks = Lock.objects.filter(name__icontains=term).values("pk")
        people = Resident.objects.filter(Q(name__icontains=term) | Q(email__icontains=term)).values("pk")
        return queryset.filter(Q(lock__in=locks) | Q(resident__in=people) | Q(actor__icontains=term)), False

    @admin.display(description="who")
    def who(self, obj: Activity) -> str:
        return str(obj.resident) if obj.resident_id else obj.actor


class AlarmNoteForm(forms.Form):
    note = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60}),
        help_text="What you found or did; kept on the alarm with your name and the time.",
    )

    def __init__(self, *args, note_required: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.note_required = note_required

    def clean_note(self):
        note = self.cleaned_data["note"].strip()
        if self.note_required and not note:
            raise forms.ValidationError("A note is required when a critical alarm is among those selected.")
        return note


# The console's order: open alarms first, the most severe first, then the oldest first.
STATE_RANK = Case(
    When(state=Alarm.State.ACTIVE, then=Value(0)),
    When(state=Alarm.State.ACKNOWLEDGED, then=Value(1)),
    default=Value(2),
)
SEVERITY_RANK = Case(
    When(severity=Alarm.Severity.CRITICAL, then=Value(0)),
    When(severity=Alarm.Severity.MAJOR, then=Value(1)),
    default=Value(2),
)


@admin.register(Alarm)
class AlarmAdmin(SiteScopedAdmin, CsvExportAdmin, ReadOnlyAdmin):
    export_columns = [
        ("kind", "kind"),
        ("severity", "severity"),
        ("state", "state"),
        ("site", "site__name"),
        ("door or lock", "lock__name"),
        ("subject", "subject"),
        ("occurrences", "occurrences"),
        ("raised at (UTC)", "raised_at"),
        ("last raised at (UTC)", "last_raised_at"),
        ("cleared at (UTC)", "cleared_at"),
        ("acknowledged by", "acknowledged_by__username"),
        ("acknowledged at (UTC)", "acknowledged_at"),
        ("resolved by", "resolved_by__username"),
        ("resolved at (UTC)", "resolved_at"),
        ("note", "note"),
    ]
    list_display = [
        "kind_name",
        "severity",
        "state",
        "site",
        "lock",
        "occurrences",
        "age",
        "last_raised_at",
        "cleared_at",
        "acknowledged_by",
    ]
    ordering = [STATE_RANK.asc(), SEVERITY_RANK.asc(), "raised_at", "id"]
    list_filter = ["state", "severity", "kind", site_filter(), ("raised_at", admin.DateFieldListFilter)]
    list_select_related = ["lock", "site", "acknowledged_by"]
    search_fields = ["=subject", "lock__name"]
    actions = ["acknowledge", "resolve", "reopen"]
    fieldsets = [
        (None, {"fields": ["kind", "severity", "state", "subject", "lock_link", "site", "occurrences"]}),
        ("Vendor", {"fields": ["raised_at", "last_raised_at", "raised_by_link", "cleared_at", "cleared_by_link"]}),
        ("People", {"fields": ["acknowledged_at", "acknowledged_by", "resolved_at", "resolved_by", "note"]}),
    ]

    @admin.display(description="kind", ordering="kind")
    def kind_name(self, obj: Alarm) -> str:
        return domain.ALARM_KINDS.get(obj.kind, (obj.kind,))[0]

    @admin.display(description="age", ordering="raised_at")
    def age(self, obj: Alarm) -> str:
        return timesince(obj.raised_at) if obj.raised_at else "—"

    @admin.display(description="door or lock")
    def lock_link(self, obj: Alarm) -> str:
        return change_link(obj.lock)

    @admin.display(description="raised by")
    def raised_by_link(self, obj: Alarm) -> str:
        return change_link(obj.raised_by)

    @admin.display(description="cleared by")
    def cleared_by_link(self, obj: Alarm) -> str:
        return change_link(obj.cleared_by)

    def has_change_permission(self, request, obj=None):
        return request.user.has_perm("portal.change_alarm")  # the actions; fields stay read-only

    def get_readonly_fields(self, request, obj=None):
        return [f for fieldset in self.fieldsets for f in fieldset[1]["fields"]]

    @admin.action(description="Acknowledge selected alarms", permissions=["change"])
    def acknowledge(self, request, queryset: QuerySet[Alarm]):
        return self._with_note(request, queryset, "acknowledge", domain.acknowledge_alarm)

    @admin.action(description="Resolve selected alarms", permissions=["change"])
    def resolve(self, request, queryset: QuerySet[Alarm]):
        return self._with_note(request, queryset, "resolve", domain.resolve_alarm)

    @admin.action(description="Reopen selected alarms", permissions=["change"])
    def reopen(self, request, queryset: QuerySet[Alarm]):
        return self._with_note(request, queryset, "reopen", domain.reopen_alarm)

    def _with_note(self, request, queryset, action: str, verb):
        """Ask for a note (required when a critical alarm is selected), then apply the verb to each
        alarm, record it in the admin's history, and say what happened."""
        critical = queryset.filter(severity=Alarm.Severity.CRITICAL).exists() and action != "reopen"
        form = AlarmNoteForm(request.POST if "apply" in request.POST else None, note_required=critical)
        if form.is_valid():
            note = form.cleaned_data["note"]
            done, refused = 0, []
            for alarm in queryset:
                try:
                    verb(alarm, request.user, note)
                except domain.AlarmStateError as exc:
                    refused.append(f"{alarm}: {exc}")
                    continue
                done += 1
                self.log_change(request, alarm, f"{action.capitalize()}d" + (f": {note}" if note else ""))
            if done:
                self.message_user(request, f"{done} alarm(s) {action.rstrip('e')}ed.", messages.SUCCESS)
            for problem in refused:
                self.message_user(request, problem, messages.WARNING)
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": f"{action.capitalize()} alarms",
            "action": action,
            "alarms": queryset.select_related("lock", "site"),
            "form": form,
            "note_required": critical,
            "opts": self.model._meta,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/portal/alarm/note_action.html", context)


@admin.register(Resident)
class ResidentAdmin(SiteScopedAdmin, ReadOnlyAdmin):
    site_paths = ("site", "grants__lock__site")  # people are seen where they have access
    list_display = ["__str__", "vendor", "email", "phone", "status", "site"]
    list_filter = [VendorFilter, "status", site_filter()]
    list_select_related = ["site"]
    search_fields = ["name", "email", "phone", "=external_id"]
    fieldsets = [
        (None, {"fields": ["name", "email", "phone", "vendor", "external_id", "site"]}),
        ("Status", {"fields": [("status", "status_as_of"), ("active_from", "expires_at")]}),
        ("Access", {"fields": ["access", "keys"]}),
        ("Vendor fields", {"fields": ["details"], "classes": ["collapse"]}),
    ]

    @admin.display(description="doors and locks")
    def access(self, obj: Resident) -> str:
        grants = obj.grants.select_related("lock").order_by("-granted_at")[:RECENT_ROWS]
        return table(
            ["door or lock", "level", "granted", "by", "revoked", "active"],
            [
                (change_link(g.lock), g.level, when(g.granted_at), g.granted_by, when(g.revoked_at), yes_no(g.active))
                for g in grants
            ],
        )

    @admin.display(description="keys and credentials")
    def keys(self, obj: Resident) -> str:
        credentials = obj.credentials.select_related("lock").order_by("-issued_at", "-id")[:RECENT_ROWS]
        return table(
            ["kind", "label", "door or lock", "status", "valid until", "active"],
            [
                (
                    change_link(c, c.get_kind_display()),
                    c.label or c.external_id,
                    change_link(c.lock),
                    c.status,
                    when(c.valid_until),
                    yes_no(c.active),
                )
                for c in credentials
            ],
        )


def yes_no(value: bool) -> str:
    return "yes" if value else "no"


class ActiveFilter(admin.SimpleListFilter):
    """Grants and credentials are active while the latest issue is newer than the latest removal."""

    title = "active"
    parameter_name = "active"
    issued, removed = "granted_at", "revoked_at"

    def lookups(self, request, model_admin):
        return [("yes", "Active"), ("no", "Revoked or removed")]

    def queryset(self, request, queryset):
        from django.db.models import F, Q

        active = Q(**{f"{self.issued}__isnull": False}) & (
            Q(**{f"{self.removed}__isnull": True}) | Q(**{f"{self.issued}__gt": F(self.removed)})
        )
        if self.value() == "yes":
            return queryset.filter(active)
        if self.value() == "no":
            return queryset.exclude(active)
        return queryset


class CredentialActiveFilter(ActiveFilter):
    issued, removed = "issued_at", "removed_at"


@admin.register(AccessGrant)
class AccessGrantAdmin(SiteScopedAdmin, ReadOnlyAdmin):
    site_paths = ("lock__site", "resident__site")
    list_display = ["resident", "lock", "level", "granted_by", "granted_at", "revoked_at", "active"]
    list_filter = [ActiveFilter, "level", site_filter("lock__site")]
    list_select_related = ["resident", "lock"]
    search_fields = ["resident__name", "resident__email", "lock__name"]

    @admin.display(boolean=True)
    def active(self, obj: AccessGrant) -> bool:
        return obj.active


@admin.register(Credential)
class CredentialAdmin(SiteScopedAdmin, ReadOnlyAdmin):
    site_paths = ("lock__site", "resident__site")
    list_display = ["__str__", "kind", "vendor", "resident", "lock", "status", "issued_at", "removed_at", "active"]
    list_filter = [CredentialActiveFilter, "kind", VendorFilter, "status"]
    list_select_related = ["resident", "lock"]
    search_fields = ["=external_id", "label", "resident__name", "resident__email", "lock__name"]

    @admin.display(boolean=True)
    def active(self, obj: Credential) -> bool:
        return obj.active


@admin.register(Camera)
class CameraAdmin(SiteScopedAdmin, ReadOnlyAdmin):
    list_display = ["__str__", "vendor", "site", "lock", "status", "status_as_of"]
    list_filter = [VendorFilter, "status", site_filter()]
    list_select_related = ["site", "lock"]
    search_fields = ["name", "=external_id", "lock__name"]


@admin.register(Intercom)
class IntercomAdmin(SiteScopedAdmin, ReadOnlyAdmin):
    list_display = ["__str__", "manufacturer", "site", "status", "status_as_of"]
    list_filter = ["manufacturer", "status", site_filter()]
    list_select_related = ["site"]
    search_fields = ["name", "=external_id"]

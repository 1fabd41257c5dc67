"""The admin's front page: what needs a building manager's attention, each figure a link to its list."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.contrib import admin
from django.db.models import Count, Q
from django.db.models.functions import TruncHour
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from events import sources
from events.models import Event
from portal.admin_base import visible_site_ids
from portal.models import Alarm, Lock, Site

OPEN = "active,acknowledged"
LOW_BATTERY = ("low", "critical")
CHART_HOURS = 24


@dataclass
class Figure:
    label: str
    value: int
    url: str
    tone: str = ""  # "alert" when it needs attention


def changelist(model: str, **filters) -> str:
    return reverse(f"admin:{model}_changelist") + ("?" + urlencode(filters) if filters else "")


class PortalAdminSite(admin.AdminSite):
    """The stock admin with a dashboard on its index page."""

    site_header = "Building operations portal"
    site_title = "Building operations"
    index_title = "Dashboard"
    index_template = "admin/portal_index.html"

    def index(self, request, extra_context=None):
        return super().index(request, {**dashboard(request), **(extra_context or {})})


def dashboard(request) -> dict:
    """About ten aggregate queries, whatever the size of the tables, each limited to the user's sites."""
    sites = visible_site_ids(request)
    in_sites = Q() if sites is None else Q(site__in=sites)
    user = request.user
    context: dict = {}
    if user.has_perm("portal.view_alarm"):
        context["alarms_by_severity"] = _alarms_by_severity(in_sites)
        context["alarms_by_site"] = _alarms_by_site(in_sites)
    if user.has_perm("portal.view_lock"):
        context["doors"] = _doors(in_sites)
    if user.has_perm("events.view_event"):
        in_endpoint_sites = Q() if sites is None else Q(endpoint__site__in=sites)
        context["event_problems"] = _event_problems(in_endpoint_sites)
        context["chart"] = _events_per_hour(in_endpoint_sites)
    figures = (_dead_notifications(request, sites), _subscriptions(request, sites))
    context["more"] = [figure for figure in figures if figure is not None]
    return context


def _alarms_by_severity(in_sites: Q) -> list[Figure]:
    counts = dict(
        Alarm.objects.filter(in_sites, state__in=Alarm.OPEN_STATES)
        .values_list("severity")
        .annotate(n=Count("id"))
        .order_by()
    )
    return [
        Figure(
            f"{severity} alarms open",
            counts.get(severity, 0),
            changelist("portal_alarm", state__in=OPEN, severity__exact=severity),
            "alert" if counts.get(severity) and severity != Alarm.Severity.MINOR else "",
        )
        for severity in (Alarm.Severity.CRITICAL, Alarm.Severity.MAJOR, Alarm.Severity.MINOR)
    ]


def _alarms_by_site(in_sites: Q) -> list[Figure]:
    rows = (
        Alarm.objects.filter(in_sites, state__in=Alarm.OPEN_STATES)
        .values_list("site_id")
        .annotate(n=Count("id"))
        .order_by("-n")[:12]
    )
    names = dict(Site.objects.filter(pk__in=[site for site, _ in rows]).values_list("pk", "name"))
    return [
        Figure(
            names.get(site, "Not placed yet"),
            n,
            changelist(
                "portal_alarm", state__in=OPEN, **({"site__id__exact": site} if site else {"site__isnull": "True"})
            ),
        )
        for site, n in rows
    ]


def _doors(in_sites: Q) -> list[Figure]:
    counts = Lock.objects.filter(in_sites, removed_at__isnull=True).aggregate(
        offline=Count("id", filter=Q(online=False)),
        low=Count("id", filter=Q(battery_status__in=LOW_BATTERY)),
        open=Count("id", filter=Q(door_open=True)),
    )
    return [
        Figure("doors and locks offline", counts["offline"], changelist("portal_lock", online__exact=0), "alert"),
        Figure("low batteries", counts["low"], changelist("portal_lock", battery_status__in=",".join(LOW_BATTERY))),
        Figure("doors open now", counts["open"], changelist("portal_lock", door_open__exact=1)),
    ]


def _event_problems(in_sites: Q) -> list[Figure]:
    counts = dict(
        Event.objects.filter(in_sites, status__in=[Event.Status.FAILED, Event.Status.UNHANDLED, Event.Status.PENDING])
        .values_list("status")
        .annotate(n=Count("id"))
        .order_by()
    )
    return [
        Figure("failed events", counts.get("failed", 0), changelist("events_event", status__exact="failed"), "alert"),
        Figure("unhandled events", counts.get("unhandled", 0), changelist("events_event", status__exact="unhandled")),
        Figure("events waiting", counts.get("pending", 0), changelist("events_event", status__exact="pending")),
    ]


def _events_per_hour(in_sites: Q) -> dict:
    """Events received per hour and vendor over the last day, as stacked bars (no JavaScript)."""
    now = timezone.now()
    start = (now - timedelta(hours=CHART_HOURS - 1)).replace(minute=0, second=0, microsecond=0)
    rows = (
        Event.objects.filter(in_sites, received_at__gte=start)
        .annotate(hour=TruncHour("received_at"))
        .values_list("hour", "source")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts = {(hour, source): n for hour, source, n in rows}
    hours = [start + timedelta(hours=h) for h in range(CHART_HOURS)]
    vendors = [name for name, _ in sources.CHOICES]
    peak = max([sum(counts.get((hour, v), 0) for v in vendors) for hour in hours] + [1])
    bars = []
    for hour in hours:
        parts = []
        for vendor in vendors:
            n = counts.get((hour, vendor), 0)
            if n:
                url = changelist(
                    "events_event",
                    source__exact=vendor,
                    received_at__gte=hour.isoformat(),
                    received_at__lt=(hour + timedelta(hours=1)).isoformat(),
                )
                parts.append({"vendor": vendor, "n": n, "percent": round(100 * n / peak, 1), "url": url})
        bars.append({"hour": hour, "parts": parts, "total": sum(p["n"] for p in parts)})
    return {"bars": bars, "vendors": vendors, "peak": peak, "total": sum(counts.values())}


def _dead_notifications(request, sites) -> Figure | None:
    from subscriptions.models import Notification

    if not request.user.has_perm("subscriptions.view_notification"):
        return None
    in_sites = Q() if sites is None else Q(site__in=sites)
    dead = Notification.objects.filter(in_sites, status=Notification.Status.DEAD).count()
    return Figure("dead notifications", dead, changelist("subscriptions_notification", status__exact="dead"), "alert")


def _subscriptions(request, sites) -> Figure | None:
    from subscriptions.models import PdkSubscription

    if not request.user.has_perm("subscriptions.view_pdksubscription"):
        return None
    in_sites = Q() if sites is None else Q(connection__site__in=sites)
    out_of_sync = PdkSubscription.objects.filter(in_sites).exclude(sync_state=PdkSubscription.SyncState.IN_SYNC)
    url = (
        changelist("subscriptions_pdksubscription")
        + "?"
        + urlencode({"sync_state__in": "pending_push,pending_delete,drifted,error"})
    )
    return Figure("PDK subscriptions not in sync", out_of_sync.count(), url, "alert")

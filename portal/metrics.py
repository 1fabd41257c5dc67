"""GET /metrics: Prometheus text read from the database at scrape time, so it is right for every process."""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import math
from datetime import timedelta

from django.apps import apps
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Count, Min
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_http_methods
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from events import sources, store
from events.models import Event

log = logging.getLogger(__name__)

# Events whose processing finished this long ago or less make up the latency figures.
LATENCY_WINDOW = timedelta(minutes=5)
# Events received longer ago than this are left out of the latency figures: the bound lets the
# query walk the received_at index instead of the whole table (a backlog that old shows in the
# oldest-pending-age gauge long before it drains).
LATENCY_LOOKBACK = timedelta(days=1)
QUANTILES = (0.5, 0.95, 0.99)
# A scrape must never pile up work on the database: PostgreSQL cancels a slower query.
QUERY_TIMEOUT_MS = 10_000

FINISHED = (Event.Status.PROCESSED, Event.Status.FAILED, Event.Status.UNHANDLED)


# --- access ---------------------------------------------------------------------------------------
@functools.cache
def _networks(allowed: tuple[str, ...]) -> tuple:
    """The allow-list as networks: single addresses and CIDR ranges ("10.0.0.0/8")."""
    networks = []
    for entry in allowed:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            log.warning("PORTAL_METRICS_ALLOWED_IPS: %r is not an address or network; ignored", entry)
    return tuple(networks)


def _address_allowed(request) -> bool:
    meta = request.META
    remote = meta.get("REMOTE_ADDR") or ""
    # Forwarded by a proxy the portal does not trust: the proxy's own (often local) address says
    # nothing about the sender, so it must not pass the allow-list.
    if meta.get("HTTP_X_FORWARDED_FOR") and remote not in settings.PORTAL_TRUSTED_PROXIES:
        return False
    address = store.client_address(meta)
    if address is None:
        return False
    ip = ipaddress.ip_address(address)
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    return any(ip in network for network in _networks(tuple(settings.PORTAL_METRICS_ALLOWED_IPS)))


def _refusal(request) -> str | None:
    """Why the request may not read the metrics, or None when it may."""
    token = settings.PORTAL_METRICS_TOKEN
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    presented = presented.strip() if scheme.lower() == "bearer" else ""
    if token and presented and hmac.compare_digest(presented.encode("utf-8", "replace"), token.encode("utf-8")):
        return None
    if _address_allowed(request):
        return None
    if presented:
        return "The bearer token does not match PORTAL_METRICS_TOKEN."
    return (
        "Metrics need a bearer token (PORTAL_METRICS_TOKEN) or a request from an address in PORTAL_METRICS_ALLOWED_IPS."
    )


@require_http_methods(["GET", "HEAD"])
def metrics(request):
    refusal = _refusal(request)
    if refusal:
        return JsonResponse({"error": "forbidden", "detail": refusal}, status=403)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PortalCollector())
    try:
        body = generate_latest(registry)
    except DatabaseError as exc:
        log.warning("metrics: the database did not answer: %s", exc.__class__.__name__)
        return JsonResponse(
            {"error": "database_unavailable", "detail": "The database did not answer; metrics are read from it."},
            status=503,
        )
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


# --- the collector --------------------------------------------------------------------------------
class PortalCollector:
    """Reads counts from the database on every scrape: no per-process state to add up."""

    def collect(self):
        now = timezone.now()
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(f"SET LOCAL statement_timeout = {QUERY_TIMEOUT_MS}")
            families = [
                *self._events(now),
                *self._latency(now),
                *self._notifications(),
            ]
        yield from families

    # Events: one GROUP BY for the counts; the backlog's age from the (status, received_at) index.
    def _events(self, now):
        # A counter: events are never pruned (only raw deliveries are), so it falls only if someone deletes events.
        received = CounterMetricFamily(
            "portal_events_received", "Events stored, by source and type.", labels=["source", "event_type"]
        )
        # Gauges, not counters: a replay moves an event back to pending for a moment, and a counter
        # that falls reads as a reset (a spike in rate()). Use delta() or deriv() on them.
        processed = GaugeMetricFamily(
            "portal_events_processed",
            "Events processed by their handler (or ignored on purpose).",
            labels=["source", "event_type"],
        )
        failed = GaugeMetricFamily(
            "portal_events_failed",
            "Events whose processing failed (falls when they are replayed).",
            labels=["source", "event_type"],
        )
        unhandled = GaugeMetricFamily(
            "portal_events_unhandled",
            "Events of a type no handler knows (falls when they are replayed).",
            labels=["source", "event_type"],
        )
        pending = GaugeMetricFamily("portal_events_pending", "Events waiting to be processed.", labels=["source"])
        oldest = GaugeMetricFamily(
            "portal_events_oldest_pending_age_seconds",
            "Age of the oldest event waiting to be processed (0 when none waits).",
            labels=["source"],
        )
        by_status = {Event.Status.PROCESSED: processed, Event.Status.FAILED: failed, Event.Status.UNHANDLED: unhandled}
        totals: dict[tuple[str, str], int] = {}
        per_status: dict[tuple[str, str, str], int] = {}
        backlog = dict.fromkeys(sources.MODULES, 0)
        rows = Event.objects.order_by().values_list("source", "event_type", "status").annotate(n=Count("id"))
        for source, event_type, status, n in rows:
            totals[source, event_type] = totals.get((source, event_type), 0) + n
            per_status[source, event_type, status] = n
            if status == Event.Status.PENDING:
                backlog[source] = backlog.get(source, 0) + n
        for (source, event_type), n in sorted(totals.items()):
            received.add_metric([source, event_type], n)
            for status, family in by_status.items():
                family.add_metric([source, event_type], per_status.get((source, event_type, status), 0))
        oldest_by_source = dict(
            Event.objects.filter(status=Event.Status.PENDING)
            .order_by()
            .values_list("source")
            .annotate(oldest=Min("received_at"))
        )
        for source in sorted(backlog):
            pending.add_metric([source], backlog[source])
            first = oldest_by_source.get(source)
            oldest.add_metric([source], max((now - first).total_seconds(), 0.0) if first else 0.0)
        return [received, processed, failed, unhandled, pending, oldest]

    # Latency: receipt to the end of processing, over events that finished in the last five minutes.
    def _latency(self, now):
        quantiles = GaugeMetricFamily(
            "portal_event_latency_seconds",
            "Receipt-to-processed latency quantiles over events finished in the last 5 minutes.",
            labels=["source", "quantile"],
        )
        count = GaugeMetricFamily(
            "portal_event_latency_window_events",
            "Events whose processing finished in the last 5 minutes.",
            labels=["source"],
        )
        total = GaugeMetricFamily(
            "portal_event_latency_window_seconds",
            "Sum of their receipt-to-processed latencies, in seconds.",
            labels=["source"],
        )
        since = now - LATENCY_WINDOW
        received_since = now - LATENCY_LOOKBACK
        found = _latencies_sql(since, received_since) if connection.vendor == "postgresql" else None
        if found is None:
            found = _latencies_python(since, received_since)
        for source in sorted(set(sources.MODULES) | set(found)):
            n, seconds, values = found.get(source, (0, 0.0, ()))
            count.add_metric([source], n)
            total.add_metric([source], seconds)
            if n:
                for q, value in zip(QUANTILES, values, strict=True):
                    quantiles.add_metric([source, str(q)], value)
        return [quantiles, count, total]

    def _notifications(self):
        """Sent, dead and waiting notifications by channel, when the subscriptions app provides them."""
        model = _notification_model()
        if model is None:
            return []
        # Gauges: deleting a rule, an alarm or an event deletes its notifications.
        sent = GaugeMetricFamily("portal_notifications_sent", "Notifications delivered.", labels=["channel"])
        dead = GaugeMetricFamily(
            "portal_notifications_dead", "Notifications given up on after every retry.", labels=["channel"]
        )
        waiting = GaugeMetricFamily(
            "portal_notifications_pending", "Notifications waiting for a first or a further try.", labels=["channel"]
        )
        status = model.Status
        waiting_states = {status.PENDING, status.RETRYING, getattr(status, "SENDING", status.PENDING)}
        counts: dict[str, dict[str, int]] = {}
        channels = [value for value, _ in model._meta.get_field("channel").choices or ()]
        for channel in channels:
            counts[channel] = {}
        rows = model.objects.order_by().values_list("channel", "status").annotate(n=Count("id"))
        for channel, state, n in rows:
            counts.setdefault(channel, {})[state] = n
        for channel, by_state in sorted(counts.items()):
            sent.add_metric([channel], by_state.get(status.SENT, 0))
            dead.add_metric([channel], by_state.get(status.DEAD, 0))
            waiting.add_metric([channel], sum(by_state.get(state, 0) for state in waiting_states))
        return [sent, dead, waiting]


def _notification_model():
    """subscriptions.Notification if it is installed and has what the metrics read; else None."""
    if not apps.is_installed("subscriptions"):
        return None
    try:
        model = apps.get_model("subscriptions", "Notification")
        status = model.Status
        fields = {field.name for field in model._meta.get_fields()}
        ready = {"channel", "status"} <= fields and all(
            hasattr(status, s) for s in ("SENT", "DEAD", "PENDING", "RETRYING")
        )
    except (LookupError, AttributeError):
        return None
    return model if ready else None


def _latencies_sql(since, received_since) -> dict[str, tuple[int, float, tuple[float, ...]]]:
    """PostgreSQL: count, sum and interpolated quantiles per source in one query."""
    table = connection.ops.quote_name(Event._meta.db_table)
    percentiles = ", ".join(f"percentile_cont({q}) WITHIN GROUP (ORDER BY latency)" for q in QUANTILES)
    sql = (
        f"SELECT source, COUNT(*), COALESCE(SUM(latency), 0), {percentiles} FROM ("  # noqa: S608
        "SELECT source, GREATEST(EXTRACT(EPOCH FROM processed_at - received_at)::float8, 0) AS latency "
        f"FROM {table} WHERE received_at >= %s AND processed_at >= %s AND status = ANY(%s)"
        ") AS finished GROUP BY source"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [received_since, since, [str(s) for s in FINISHED]])
        return {
            source: (n, float(seconds), tuple(float(v) for v in values))
            for source, n, seconds, *values in cursor.fetchall()
        }


def _latencies_python(since, received_since) -> dict[str, tuple[int, float, tuple[float, ...]]]:
    """Other databases (the SQLite quick start): the same figures computed here."""
    by_source: dict[str, list[float]] = {}
    rows = Event.objects.filter(
        received_at__gte=received_since, processed_at__gte=since, status__in=FINISHED
    ).values_list("source", "received_at", "processed_at")
    for source, received_at, processed_at in rows.iterator():
        by_source.setdefault(source, []).append(max((processed_at - received_at).total_seconds(), 0.0))
    return {
        source: (len(values), math.fsum(values), tuple(_percentile(sorted(values), q) for q in QUANTILES))
        for source, values in by_source.items()
    }


def _percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks, as PostgreSQL's percentile_cont."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

"""Writing what arrives: one raw delivery per accepted request, one event per vendor event."""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Mapping

from django.conf import settings
from django.db import connection, transaction
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from events import sources
from events.models import Delivery, Endpoint, Event, RejectedRequest
from events.sources.base import IdentifiedEvent, Inbound

log = logging.getLogger(__name__)

REDACTED = "[redacted]"
ALWAYS_SECRET_HEADERS = {"authorization", "proxy-authorization", "cookie"}


@dataclass(frozen=True)
class Stored:
    event_id: int
    duplicate: bool


# --- endpoint look-up ---------------------------------------------------------------------------
# Every request needs its endpoint; a short per-process cache keeps that off the database.
_endpoint_cache: dict[str, tuple[float, Endpoint | None]] = {}
_ENDPOINT_CACHE_LIMIT = 10_000


def find_endpoint(endpoint_id: str) -> Endpoint | None:
    ttl = settings.PORTAL_ENDPOINT_CACHE_SECONDS
    now = time.monotonic()
    cached = _endpoint_cache.get(endpoint_id)
    if cached and cached[0] > now:
        return cached[1]
    endpoint = Endpoint.objects.filter(pk=endpoint_id).first()
    if ttl > 0:
        if len(_endpoint_cache) >= _ENDPOINT_CACHE_LIMIT:
            _endpoint_cache.clear()
        _endpoint_cache[endpoint_id] = (now + ttl, endpoint)
    return endpoint


def _forget_endpoint(sender, instance: Endpoint, **kwargs) -> None:
    _endpoint_cache.pop(str(instance.pk), None)


post_save.connect(_forget_endpoint, sender=Endpoint, dispatch_uid="forget-endpoint-on-save")
post_delete.connect(_forget_endpoint, sender=Endpoint, dispatch_uid="forget-endpoint-on-delete")


# --- writing ------------------------------------------------------------------------------------
def record_delivery(endpoint: Endpoint, inbound: Inbound, event: IdentifiedEvent, remote_addr: str | None) -> Stored:
    """Store the request and its event in one transaction; a known event is not stored again.

    The unique constraint on (source, dedup_key) decides, so concurrent duplicates wait for the
    first insert to commit and then all answer with its id.
    """
    now = timezone.now()
    with transaction.atomic():
        event_id = _insert_event_unless_known(endpoint, event, now)
        duplicate = event_id is None
        if duplicate:
            event_id = (
                Event.objects.filter(source=endpoint.source, dedup_key=event.dedup_key)
                .values_list("pk", flat=True)
                .get()
            )
        Delivery.objects.create(
            endpoint=endpoint,
            event_id=event_id,
            received_at=now,
            headers=safe_headers(inbound.headers, endpoint),
            body=inbound.body,
            remote_addr=remote_addr,
            duplicate=duplicate,
        )
    return Stored(event_id=event_id, duplicate=duplicate)


def _insert_event_unless_known(endpoint: Endpoint, event: IdentifiedEvent, now) -> int | None:
    """INSERT … ON CONFLICT DO NOTHING RETURNING id: the id when new, None when already stored.

    Django's bulk_create(ignore_conflicts=True) can't return the id, so this is written out; the
    statement is the same on PostgreSQL and SQLite (3.35+).
    """
    values = {
        "source": endpoint.source,
        "event_type": event.event_type,
        "dedup_key": event.dedup_key,
        "message_id": event.message_id,
        "occurred_at": event.occurred_at,
        "received_at": now,
        "endpoint": endpoint.pk,
        "payload": event.payload,
        "payload_flags": event.flags,
        "status": Event.Status.PENDING,
        "attempts": 0,
        "last_error": "",
    }
    fields = [Event._meta.get_field(name) for name in values]
    quote = connection.ops.quote_name
    sql = "INSERT INTO {table} ({columns}) VALUES ({params}) ON CONFLICT ({unique}) DO NOTHING RETURNING {pk}".format(
        table=quote(Event._meta.db_table),
        columns=", ".join(quote(f.column) for f in fields),
        params=", ".join(["%s"] * len(fields)),
        unique=", ".join(quote(Event._meta.get_field(n).column) for n in ("source", "dedup_key")),
        pk=quote(Event._meta.pk.column),
    )
    params = [f.get_db_prep_save(values[f.name], connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return row[0] if row else None


def record_rejection(endpoint: Endpoint, headers: Mapping[str, str], remote_addr: str | None, status: int, reason: str) -> None:
    """Keep a trace of a refused request; failing to write it must not change the answer."""
    try:
        RejectedRequest.objects.create(
            endpoint=endpoint,
            received_at=timezone.now(),
            status_code=status,
            reason=reason[:500],
            remote_addr=remote_addr,
            headers=safe_headers(headers, endpoint),
        )
    except Exception:  # the database may be the reason; the client still gets its 4xx
        log.warning("could not record a rejected request to endpoint %s", endpoint.pk, exc_info=True)


def safe_headers(headers: Mapping[str, str], endpoint: Endpoint) -> dict[str, str]:
    """Request headers with every credential replaced, fit to be stored and shown."""
    module = sources.get(endpoint.source)
    secret = ALWAYS_SECRET_HEADERS | (module.secret_headers(endpoint) if module else set())
    return {
        name: REDACTED if name.lower() in secret else _storable(value)
        for name, value in headers.items()
    }


def _storable(value: str) -> str:
    # Header bytes arrive latin-1 decoded; NUL can't be stored in PostgreSQL text.
    return value.replace("\x00", "\ufffd")[:4096]


def client_address(meta: Mapping[str, str]) -> str | None:
    """REMOTE_ADDR when it is an IP address (behind a proxy, gunicorn's forwarded_allow_ips sets it)."""
    value = meta.get("REMOTE_ADDR") or ""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None

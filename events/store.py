"""Writing what arrives: one raw delivery per accepted request, one event per vendor event."""

from __future__ import annotations

import functools
import ipaddress
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connection, connections, models, transaction
from django.db.models.signals import post_delete, post_save
from django.utils import timezone
from psycopg.types.json import Jsonb

from events import sources
from events.models import Delivery, Endpoint, Event, RejectedRequest
from events.sources.base import IdentifiedEvent, Inbound, bounded_key
from portal.sql import quoted_table

log = logging.getLogger(__name__)

REDACTED = "[redacted]"
ALWAYS_SECRET_HEADERS = {"authorization", "proxy-authorization", "cookie"}


@dataclass(frozen=True)
class Stored:
    event_id: int
    duplicate: bool


# --- endpoint look-up ---------------------------------------------------------------------------
# Every request needs its endpoint; a short per-process cache keeps that off the database.
_endpoint_cache: dict[str, tuple[float, Endpoint]] = {}
_ENDPOINT_CACHE_LIMIT = 10_000


def find_endpoint(endpoint_id: str) -> Endpoint | None:
    try:
        endpoint_id = uuid.UUID(endpoint_id).hex
    except ValueError:
        return None
    ttl = settings.PORTAL_ENDPOINT_CACHE_SECONDS
    now = time.monotonic()
    cached = _endpoint_cache.get(endpoint_id)
    if cached and cached[0] > now:
        return cached[1]
    endpoint = once_more_on_a_stale_connection(Endpoint.objects.filter(pk=endpoint_id).first)
    # Only real endpoints are cached: posts to random ids must not push them out.
    if endpoint is not None and ttl > 0:
        if len(_endpoint_cache) >= _ENDPOINT_CACHE_LIMIT:
            _endpoint_cache.clear()
        _endpoint_cache[endpoint_id] = (now + ttl, endpoint)
    return endpoint


def _forget_endpoint(sender, instance: Endpoint, **kwargs) -> None:
    _endpoint_cache.pop(instance.pk.hex, None)


post_save.connect(_forget_endpoint, sender=Endpoint, dispatch_uid="forget-endpoint-on-save")
post_delete.connect(_forget_endpoint, sender=Endpoint, dispatch_uid="forget-endpoint-on-delete")


# --- writing ------------------------------------------------------------------------------------
def once_more_on_a_stale_connection(work):
    """Run ``work`` (idempotent); a connection kept from before a database outage fails on its
    first use afterwards: that one failure is answered by a fresh connection and one more try, so
    the first delivery after an outage is not refused. A failure on a fresh connection is an outage.
    """
    reused = connection.connection is not None and not connection.in_atomic_block
    try:
        return work()
    except (OperationalError, InterfaceError):
        if not reused:
            raise
        connection.close()
        return work()


def record_delivery(endpoint: Endpoint, inbound: Inbound, event: IdentifiedEvent, remote_addr: str | None) -> Stored:
    """Store the request and, unless it is already known, its event; committed on return (storing
    is idempotent: a stale connection gets one more try)."""
    return once_more_on_a_stale_connection(lambda: _record_delivery(endpoint, inbound, event, remote_addr))


def _record_delivery(endpoint: Endpoint, inbound: Inbound, event: IdentifiedEvent, remote_addr: str | None) -> Stored:
    """Store the request and, unless it is already known, its event; committed on return.

    The unique constraint on (source, dedup_key) decides what is a duplicate, so concurrent
    duplicates wait for the first insert to commit and then all answer with its id.
    """
    now = timezone.now()
    dedup_key = event.dedup_key
    if endpoint.unauthenticated:
        # Anyone can post to an endpoint without verification; its events must not claim ids
        # that verified deliveries to other endpoints will need, so they dedupe among themselves.
        dedup_key = bounded_key(f"unverified:{endpoint.pk.hex}:{dedup_key}")
    event_row = {
        "source": endpoint.source,
        "event_type": event.event_type,
        "dedup_key": dedup_key,
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
    delivery_row = {
        "endpoint": endpoint.pk,
        "received_at": now,
        "headers": safe_headers(inbound.headers, endpoint),
        "body": inbound.body,
        "remote_addr": remote_addr,
    }
    if connection.vendor == "postgresql":
        return _store_in_one_statement(event_row, delivery_row)
    return _store_in_a_transaction(event_row, delivery_row)


@functools.cache
def _fields(model, names: tuple[str, ...]) -> tuple:
    return tuple(model._meta.get_field(name) for name in names)


def _columns(model, row: dict) -> tuple[list[str], list]:
    fields = _fields(model, tuple(row))
    quote = connection.ops.quote_name
    return [quote(f.column) for f in fields], _params(model, row)


def _params(model, row: dict) -> list:
    # The connection itself, not the thread-local proxy: the proxy costs a look-up per access.
    db = connections[DEFAULT_DB_ALIAS]
    return [f.get_db_prep_save(row[f.name], db) for f in _fields(model, tuple(row))]


@functools.cache
def _psycopg_adapters(model, names: tuple[str, ...]) -> tuple:
    """Per column, how psycopg must be told about the value: JSON columns need Jsonb, the rest
    (text, numbers, aware datetimes, UUIDs, bytes, addresses as text) adapt natively."""
    return tuple(Jsonb if isinstance(f, models.JSONField) else None for f in _fields(model, names))


def _psycopg_params(model, row: dict) -> list:
    """The values of a row as psycopg takes them, skipping Django's per-field preparation, which
    costs more than the rest of the request on the ingress hot path."""
    adapters = _psycopg_adapters(model, tuple(row))
    return [
        adapt(value) if adapt and value is not None else value
        for adapt, value in zip(adapters, row.values(), strict=True)
    ]


# ON CONFLICT (source, dedup_key) DO NOTHING: PostgreSQL and SQLite (3.35+) spell it the same way.
_NEW_EVENT = "INSERT INTO {event} ({columns}) VALUES ({values}) ON CONFLICT (source, dedup_key) DO NOTHING RETURNING id"


@functools.cache
def _one_statement_sql(event_names: tuple[str, ...], delivery_names: tuple[str, ...]) -> tuple[str, str]:
    """The two statements of the PostgreSQL path, built once per process from the models.

    Table and column names come from the models and values are parameters: nothing is interpolated.
    """
    quote = connection.ops.quote_name
    event_columns = ", ".join(quote(f.column) for f in _fields(Event, event_names))
    delivery_columns = ", ".join(quote(f.column) for f in _fields(Delivery, delivery_names))
    delivery_values = ", ".join(["%s"] * len(delivery_names))
    insert_event = _NEW_EVENT.format(
        event=quoted_table(Event), columns=event_columns, values=", ".join(["%s"] * len(event_names))
    )
    insert_delivery = f"INSERT INTO {quoted_table(Delivery)} ({delivery_columns}, event_id, duplicate) "
    new = (
        f"WITH new_event AS ({insert_event}) {insert_delivery}"  # noqa: S608
        f"SELECT {delivery_values}, id, false FROM new_event RETURNING event_id"
    )
    known = (
        f"{insert_delivery}SELECT {delivery_values}, id, true FROM {quoted_table(Event)} "  # noqa: S608
        "WHERE source = %s AND dedup_key = %s RETURNING event_id"
    )
    return new, known


def _store_in_one_statement(event_row: dict, delivery_row: dict) -> Stored:
    """PostgreSQL: the event and its delivery in one autocommitted, prepared statement.

    When the event is already stored the statement inserts nothing (ON CONFLICT waits for a
    concurrent insert of the same event to commit); a second statement, which sees the committed
    event, then records the delivery as a duplicate. The statements go to psycopg directly
    (prepared server-side, parsed once per connection); Django still maps its errors.
    """
    new, known = _one_statement_sql(tuple(event_row), tuple(delivery_row))
    event_params, delivery_params = _psycopg_params(Event, event_row), _psycopg_params(Delivery, delivery_row)
    connection.ensure_connection()
    # Django's cursors bind parameters client-side; a plain psycopg cursor binds them server-side
    # so the prepared statement is parsed and planned once per connection, not per request.
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        row = cursor.execute(new, event_params + delivery_params, prepare=True).fetchone()
        if row:
            return Stored(event_id=row[0], duplicate=False)
        key = [event_row["source"], event_row["dedup_key"]]
        row = cursor.execute(known, delivery_params + key, prepare=True).fetchone()
        if row:
            return Stored(event_id=row[0], duplicate=True)
    # Only if the stored twin vanished between the two statements: the vendor's retry will do.
    raise OperationalError("the event conflicted with one that is gone; retry")


def _store_in_a_transaction(event_row: dict, delivery_row: dict) -> Stored:
    """Other databases (SQLite in the quick start): the same effect in a short transaction."""
    event_columns, event_params = _columns(Event, event_row)
    sql = _NEW_EVENT.format(
        event=quoted_table(Event), columns=", ".join(event_columns), values=", ".join(["%s"] * len(event_columns))
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, event_params)
        row = cursor.fetchone()
        duplicate = row is None
        if duplicate:
            event_id = Event.objects.values_list("pk", flat=True).get(
                source=event_row["source"], dedup_key=event_row["dedup_key"]
            )
        else:
            event_id = row[0]
        Delivery.objects.create(
            **{k: v for k, v in delivery_row.items() if k != "endpoint"},
            endpoint_id=delivery_row["endpoint"],
            event_id=event_id,
            duplicate=duplicate,
        )
    return Stored(event_id=event_id, duplicate=duplicate)


def record_rejection(
    endpoint: Endpoint, headers: Mapping[str, str], remote_addr: str | None, status: int, reason: str
) -> None:
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
    """Request headers with every credential replaced, fit to be stored and shown: the headers
    that carry credentials, and any other carrying one of the endpoint's secrets (a sender still
    configured for the endpoint's previous mode sends its token where it is no longer read)."""
    module = sources.get(endpoint.source)
    secret = ALWAYS_SECRET_HEADERS | (module.secret_headers(endpoint) if module else set())
    known = [
        value for value in (endpoint.secret, endpoint.basic_password, getattr(endpoint, "previous_secret", "")) if value
    ]

    def carries_secret(value: str) -> bool:
        return any(credential in value for credential in known)

    return {
        name: REDACTED if name.lower() in secret or carries_secret(value) else _storable(value)
        for name, value in headers.items()
    }


def _storable(value: str) -> str:
    # Header bytes arrive latin-1 decoded; NUL can't be stored in PostgreSQL text.
    return value.replace("\x00", "\ufffd")[:4096]


def client_address(meta: Mapping[str, str]) -> str | None:
    """The sender's IP: REMOTE_ADDR, or the nearest X-Forwarded-For hop when it came via a trusted proxy."""
    address = meta.get("REMOTE_ADDR") or ""
    if address in settings.PORTAL_TRUSTED_PROXIES:
        hops = [hop.strip() for hop in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if hops:
            address = hops[-1]
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None

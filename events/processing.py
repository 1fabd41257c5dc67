"""Turning stored events into work: publishing their tasks, running handlers, replaying."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from events import sources
from events.models import Event

log = logging.getLogger(__name__)

# Errors that a later try can cure: the task is retried instead of the event marked failed.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)


def publish(event_ids: list[int]) -> None:
    """Send one process_event task per id over a single broker connection; raises if it's down."""
    from events.tasks import process_event

    with process_event.app.producer_or_acquire() as producer:
        for event_id in event_ids:
            process_event.apply_async((event_id,), producer=producer, retry=False)


def enqueue(events: QuerySet[Event], limit: int = 500) -> int:
    """Publish tasks for up to ``limit`` of these pending events and stamp them as enqueued.

    Rows are locked with SKIP LOCKED so several dispatchers never publish the same batch; if the
    broker is down the transaction rolls back and the events stay as they were.
    """
    with transaction.atomic():
        ids = list(
            events.filter(status=Event.Status.PENDING)
            .order_by("pk")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        if ids:
            publish(ids)
            Event.objects.filter(pk__in=ids).update(enqueued_at=timezone.now())
    return len(ids)


def dispatch_new(limit: int = 500) -> int:
    """Publish events committed since the last call (the dispatcher's loop body)."""
    return enqueue(Event.objects.filter(enqueued_at__isnull=True), limit)


def requeue_stale(older_than: timedelta, limit: int = 5000) -> int:
    """Publish again pending events whose task never ran: lost with the broker, or never sent."""
    cutoff = timezone.now() - older_than
    stale = Event.objects.filter(Q(enqueued_at__lt=cutoff) | Q(enqueued_at__isnull=True, received_at__lt=cutoff))
    return enqueue(stale, limit)


def process(event_id: int) -> str | None:
    """Run the vendor handler for one event, once. Safe to call twice or concurrently.

    Returns the status it left the event in, or None when there was nothing to do.
    """
    with transaction.atomic():
        try:
            event = Event.objects.select_for_update().get(pk=event_id)
        except Event.DoesNotExist:
            return None
        if event.status != Event.Status.PENDING:
            return None  # already done by an earlier delivery of the same task
        event.attempts += 1
        module = sources.get(event.source)
        handler = module.HANDLERS.get(event.event_type) if module else None
        if handler is not None:
            try:
                with transaction.atomic():
                    handler(event)
            except TRANSIENT_ERRORS:
                raise
            except Exception as exc:  # a bad payload or a bug: visible, replayable, not retried
                log.warning("event %s (%s %s) failed", event.pk, event.source, event.event_type, exc_info=True)
                event.status, event.last_error = Event.Status.FAILED, f"{exc.__class__.__name__}: {exc}"[:5000]
            else:
                event.status, event.last_error = Event.Status.PROCESSED, ""
        elif module and event.event_type in module.IGNORED:
            event.status, event.last_error = Event.Status.PROCESSED, ""
        else:
            event.status = Event.Status.UNHANDLED
            event.last_error = f"no handler for {event.source} event type {event.event_type!r}"
        event.processed_at = timezone.now()
        event.save(update_fields=["status", "last_error", "attempts", "processed_at"])
        return event.status


def replay(events: QuerySet[Event]) -> tuple[int, bool]:
    """Mark events pending again and publish them; returns (count, published now?).

    When the broker is down the events stay pending and the dispatcher publishes them later.
    """
    ids = list(events.values_list("pk", flat=True))
    Event.objects.filter(pk__in=ids).update(status=Event.Status.PENDING, enqueued_at=None, last_error="")
    published = True
    for start in range(0, len(ids), 500):
        try:
            enqueue(Event.objects.filter(pk__in=ids[start : start + 500]))
        except Exception:
            log.warning("broker unavailable; %d replayed events wait for the dispatcher", len(ids))
            published = False
            break
    return len(ids), published

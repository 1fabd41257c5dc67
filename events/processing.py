"""Turning stored events into work: publishing their tasks, running handlers, replaying."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import timedelta

from amqp.exceptions import ChannelError
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from events import signals, sources
from events.models import Event
from portal import domain

log = logging.getLogger(__name__)

# Errors that a later try can cure: the task is retried instead of the event marked failed.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)


def publish(event_ids: list[int]) -> None:
    """Send tasks for these events over a single broker connection, up to PORTAL_PROCESS_BATCH
    events per task; raises if the broker is down."""
    from events.tasks import process_events

    size = settings.PORTAL_PROCESS_BATCH
    with process_events.app.producer_or_acquire() as producer:
        for start in range(0, len(event_ids), size):
            process_events.apply_async((event_ids[start : start + size],), producer=producer, retry=False)


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


def requeue_stale(unpublished_after: timedelta, republish_after: timedelta, limit: int = 5000) -> int:
    """Publish pending events nobody published in time, and again those whose task never ran.

    The second wait is long on purpose: a task that is merely queued behind a backlog must not be
    published again and again while it waits. Unless the queue is empty: then a task published
    that long ago is not waiting anywhere (the broker restarted without its data, say), and the
    shorter wait applies. A task a worker holds right now may be published twice; processing it
    twice does nothing the second time.
    """
    now = timezone.now()
    if broker_queue_length() == 0:
        republish_after = min(republish_after, unpublished_after)
    stale = Event.objects.filter(
        Q(enqueued_at__isnull=True, received_at__lt=now - unpublished_after) | Q(enqueued_at__lt=now - republish_after)
    )
    return enqueue(stale, limit)


def broker_queue_length(queue: str = "celery", connection=None) -> int | None:
    """Messages waiting in the processing queue, or None when the broker can't say."""
    from events.tasks import process_events

    try:
        with connection or process_events.app.connection_for_read() as connection, connection.channel() as channel:
            return channel.queue_declare(queue=queue, passive=True).message_count
    except ChannelError as exc:
        # Redis keeps no empty queue: "no such queue" is an empty one.
        return 0 if str(getattr(exc, "reply_code", "")) == "404" else None
    except Exception:  # unreachable, or a transport without passive declares
        return None


def process(event_id: int) -> str | None:
    """Run the vendor handler for one event, once; the status it left the event in, or None."""
    return process_batch([event_id]).get(event_id)


def process_batch(event_ids: list[int]) -> dict[int, str]:
    """Run the vendor handlers for these events, each once. Safe to call twice or concurrently.

    One transaction for the batch: one commit instead of one per event. Handlers run optimistically
    without savepoints (two round trips each saved); if one raises, the batch is rolled back and
    run again with each handler in its own savepoint, so a bad event fails alone. A transient
    database error rolls the batch back and is raised for the task to retry.
    Returns the status each pending event was left in.
    """
    try:
        return _process_batch(event_ids, isolate=False)
    except _HandlerFailed:
        return _process_batch(event_ids, isolate=True)


class _HandlerFailed(Exception):
    """A handler raised in the optimistic pass: the batch is run again, one savepoint per event."""


def _process_batch(event_ids: list[int], *, isolate: bool) -> dict[int, str]:
    with transaction.atomic(), domain.unit_of_work():
        events = list(
            Event.objects.select_for_update()
            .filter(pk__in=event_ids, status=Event.Status.PENDING)
            .order_by("pk")
            .only("pk", "source", "event_type", "payload", "occurred_at", "received_at", "attempts", "status")
        )
        where = {event.pk: _run_handler(event, isolate=isolate) for event in events}
        # One UPDATE per outcome (nearly always just "processed"), not a CASE per row and column.
        outcomes = defaultdict(list)
        for event in events:
            outcomes[event.status, event.last_error].append(event.pk)
        finished_at = timezone.now()
        for (status, last_error), ids in outcomes.items():
            Event.objects.filter(pk__in=ids).update(
                status=status, last_error=last_error, attempts=F("attempts") + 1, processed_at=finished_at
            )
        if processed := [event for event in events if event.status == Event.Status.PROCESSED]:
            signals.events_processed.send(sender=Event, events=processed, where=where)
    return {event.pk: event.status for event in events}


def _run_handler(event: Event, *, isolate: bool) -> dict | None:
    """Decide the event's outcome: processed, failed (with the reason) or unhandled. Returns where
    the handler found the event happened (domain.handling), if it ran."""
    module = sources.get(event.source)
    handler = module.HANDLERS.get(event.event_type) if module else None
    problem = module.validate(event.event_type, event.payload) if module else None
    if problem:
        # The vendor's schema says this payload is wrong: visible and replayable, not guessed at.
        event.status, event.last_error = Event.Status.FAILED, f"invalid payload: {problem}"
    elif handler is not None:
        try:
            with domain.handling() as where:
                if isolate:
                    with transaction.atomic(), domain.rolled_back_together():
                        handler(event)
                else:
                    handler(event)
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:  # a bad payload or a bug: visible, replayable, not retried
            if not isolate:
                raise _HandlerFailed from exc
            log.warning("event %s (%s %s) failed", event.pk, event.source, event.event_type, exc_info=True)
            event.status, event.last_error = Event.Status.FAILED, f"{exc.__class__.__name__}: {exc}"[:5000]
        else:
            event.status, event.last_error = Event.Status.PROCESSED, ""
            return where
    elif module and event.event_type in module.IGNORED:
        event.status, event.last_error = Event.Status.PROCESSED, ""
    else:
        event.status = Event.Status.UNHANDLED
        event.last_error = f"no handler for {event.source} event type {event.event_type!r}"


def note_transient_failure(event_ids: list[int], exc: Exception, *, final: bool) -> None:
    """Keep the attempt visible although its transaction rolled back; give up after the last one."""
    changes = {"attempts": F("attempts") + 1, "last_error": f"{exc.__class__.__name__}: {exc}"[:5000]}
    if final:
        changes |= {"status": Event.Status.FAILED, "processed_at": timezone.now()}
    try:
        Event.objects.filter(pk__in=event_ids, status=Event.Status.PENDING).update(**changes)
    except TRANSIENT_ERRORS:
        log.warning("could not record the failed attempt on events %s", event_ids)


def replay(events: QuerySet[Event]) -> int:
    """Mark events pending and unpublished again: the dispatcher publishes them within a moment."""
    return events.update(status=Event.Status.PENDING, enqueued_at=None, last_error="")

"""Celery tasks of the events app: process one event, requeue stale ones, prune old records."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from events import processing
from events.models import Delivery, RejectedRequest


@shared_task(bind=True, max_retries=12)
def process_events(self, event_ids: list[int]) -> dict[int, str]:
    """acks_late and reject_on_worker_lost come from settings: a task dies with its worker, never lost."""
    try:
        return processing.process_batch(event_ids)
    except processing.TRANSIENT_ERRORS as exc:
        final = self.request.retries >= self.max_retries
        processing.note_transient_failure(event_ids, exc, final=final)
        if final:
            return dict.fromkeys(event_ids, "failed")
        raise self.retry(exc=exc, countdown=min(300, 2 ** (self.request.retries + 1))) from None


@shared_task
def process_event(event_id: int) -> None:
    """Tasks published before events were processed in batches still run."""
    process_events.delay([event_id])


@shared_task
def requeue_pending_events() -> int:
    return processing.requeue_stale(
        unpublished_after=timedelta(seconds=settings.PORTAL_REQUEUE_AFTER_SECONDS),
        republish_after=timedelta(seconds=settings.PORTAL_REPUBLISH_AFTER_SECONDS),
    )


@shared_task
def prune_old_records(batch: int = 10_000) -> dict[str, int]:
    """Raw deliveries and rejected-request records past the retention period; events stay.

    Deleted in batches, each its own short transaction, so a month of rows never holds one
    long lock against the ingress.
    """
    cutoff = timezone.now() - timedelta(days=settings.PORTAL_RETENTION_DAYS)
    return {
        "deliveries": _delete_in_batches(Delivery.objects.filter(received_at__lt=cutoff), batch),
        "rejections": _delete_in_batches(RejectedRequest.objects.filter(received_at__lt=cutoff), batch),
    }


def _delete_in_batches(rows, batch: int) -> int:
    total = 0
    while ids := list(rows.order_by().values_list("pk", flat=True)[:batch]):
        total += rows.model.objects.filter(pk__in=ids).delete()[0]
    return total

"""Celery tasks of the events app: process one event, requeue stale ones, prune old records."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from events import processing
from events.models import Delivery, RejectedRequest


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=processing.TRANSIENT_ERRORS,
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=12,
)
def process_event(event_id: int) -> str | None:
    return processing.process(event_id)


@shared_task
def requeue_pending_events() -> int:
    older_than = timedelta(seconds=settings.PORTAL_REQUEUE_AFTER_SECONDS)
    return processing.requeue_stale(older_than)


@shared_task
def prune_old_records() -> dict[str, int]:
    """Raw deliveries and rejected-request records past the retention period; events stay."""
    cutoff = timezone.now() - timedelta(days=settings.PORTAL_RETENTION_DAYS)
    deliveries, _ = Delivery.objects.filter(received_at__lt=cutoff).delete()
    rejections, _ = RejectedRequest.objects.filter(received_at__lt=cutoff).delete()
    return {"deliveries": deliveries, "rejections": rejections}

"""Celery tasks of the subscriptions app: push and delete one PDK subscription, reconcile connections."""

from __future__ import annotations

from celery import shared_task

from subscriptions import sync
from subscriptions.models import PdkConnection

# A push or delete that finds its subscription busy (another worker is talking to PDK about it)
# comes back shortly instead of running beside it.
BUSY_RETRY_SECONDS = 2


@shared_task(bind=True, max_retries=60)
def push_subscription(self, pk: int) -> str:
    """Create or update one subscription's hook on PDK; a failure is kept on the row for reconcile."""
    outcome = sync.push(pk)
    if outcome == "busy":
        raise self.retry(countdown=BUSY_RETRY_SECONDS)
    return outcome


@shared_task(bind=True, max_retries=60)
def delete_subscription(self, pk: int) -> str:
    """Delete one hook on PDK, then its row; until PDK confirms, the row stays pending delete."""
    outcome = sync.delete(pk)
    if outcome == "busy":
        raise self.retry(countdown=BUSY_RETRY_SECONDS)
    return outcome


@shared_task
def reconcile_connection(pk: int) -> dict | None:
    connection = PdkConnection.objects.filter(pk=pk).first()
    return sync.reconcile(connection).as_dict() if connection else None


@shared_task
def reconcile_all() -> int:
    """Beat's entry point: one task per connection, so a slow organization delays no other."""
    pks = list(PdkConnection.objects.values_list("pk", flat=True))
    for pk in pks:
        reconcile_connection.delay(pk)
    return len(pks)

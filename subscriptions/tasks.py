"""Celery tasks of the subscriptions app: PDK subscriptions (push, delete, reconcile) and notifications."""

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


# --- notifications -------------------------------------------------------------------------------


@shared_task
def fan_out_alarms(*_legacy) -> int:
    """Alarm changes were committed: create the notifications the rules call for, publish the sends."""
    from subscriptions import notifications

    return len(notifications.fan_out_pending())


@shared_task
def deliver_notification(pk: int) -> str:
    """One try at one notification; a failure is scheduled again by the sweep, never by a retry here."""
    from subscriptions import notifications

    return notifications.deliver(pk)


@shared_task
def send_due_notifications() -> int:
    """Beat: publish retries and storm summaries whose time has come, and sends whose task was lost."""
    from subscriptions import notifications

    return notifications.send_due()


@shared_task
def send_notification_reminders() -> int:
    """Beat: repeat-until-acknowledged."""
    from subscriptions import notifications

    return notifications.send_reminders()

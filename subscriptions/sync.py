"""Keeping PDK's hooks and the portal's subscriptions equal: push, delete, reconcile."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from subscriptions.models import PdkConnection, PdkSubscription, overlap
from subscriptions.pdk_client import PdkClient, PdkError

log = logging.getLogger(__name__)
State = PdkSubscription.SyncState
# Longer than the slowest call can take with all its retries, so a lock outlives no worker by long.
LOCK_SECONDS = 300
# What pdk_sync prints, in this order.
REPORTED = ("created", "updated", "imported", "drifted", "deleted", "removed", "expired", "failed")


@dataclass
class Summary:
    counts: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**{key: self.counts.get(key, 0) for key in REPORTED}, "errors": self.errors}


@contextlib.contextmanager
def locked(key: str):
    """One worker at a time per subscription or connection, across processes (the shared cache)."""
    owner = uuid.uuid4().hex
    got = cache.add(key, owner, timeout=LOCK_SECONDS)
    try:
        yield got
    finally:
        if got and cache.get(key) == owner:
            cache.delete(key)


def subscription_lock(pk: int):
    return locked(f"pdk:subscription-lock:{pk}")


def _load(pk: int) -> PdkSubscription | None:
    return PdkSubscription.objects.select_related("connection", "endpoint").filter(pk=pk).first()


# --- push ---------------------------------------------------------------------------------------


def push(pk: int) -> str:
    """Create or update the hook on PDK. Returns created, updated, failed, skipped or busy."""
    with subscription_lock(pk) as got:
        if not got:
            return "busy"
        subscription = _load(pk)
        if subscription is None or subscription.sync_state == State.PENDING_DELETE:
            return "skipped"
        return _push(subscription, PdkClient(subscription.connection))


def _push(subscription: PdkSubscription, client: PdkClient, *, hooks=None, state_after=State.IN_SYNC) -> str:
    version = subscription.config_version
    if subscription.rotation_pending:
        _extend_previous_secret(subscription)  # PDK still signs with the old secret until this push lands
    body = subscription.pdk_object()
    outcome = "updated"
    try:
        if subscription.remote_id:
            try:
                client.update_hook(subscription.remote_id, body)
            except PdkError as exc:
                if exc.status != 404:
                    raise
                subscription.remote_id = ""  # deleted on PDK meanwhile: create it again
        if not subscription.remote_id:
            existing = _hook_with_our_url(subscription, client, hooks)
            if existing:
                # A create whose answer was lost (a crash, a timeout): adopt it rather than make a twin.
                client.update_hook(existing, body)
                subscription.remote_id = existing
            else:
                subscription.remote_id = client.create_hook(body)
                outcome = "created"
    except PdkError as exc:
        _save_failure(subscription, version, str(exc))
        return "failed"
    subscription.url = body["url"]
    _save_success(subscription, version, state_after)
    return outcome


def _hook_with_our_url(subscription: PdkSubscription, client: PdkClient, hooks) -> str | None:
    if not subscription.managed or not subscription.url:
        return None
    hooks = client.list_hooks() if hooks is None else hooks
    taken = set(
        PdkSubscription.objects.filter(connection=subscription.connection)
        .exclude(pk=subscription.pk)
        .exclude(remote_id="")
        .values_list("remote_id", flat=True)
    )
    for hook in hooks:
        if hook.get("url") == subscription.url and str(hook["id"]) not in taken:
            return str(hook["id"])
    return None


def _save_success(subscription: PdkSubscription, version: int, state_after: str) -> None:
    now = timezone.now()
    rows = PdkSubscription.objects.filter(pk=subscription.pk)
    with transaction.atomic():
        rows.update(remote_id=subscription.remote_id, url=subscription.url)
        # Only if nobody changed the config meanwhile (that change enqueued its own push) and
        # nobody asked for a delete.
        current = rows.filter(config_version=version).exclude(sync_state=State.PENDING_DELETE)
        changed = current.update(sync_state=state_after, last_synced_at=now, last_error="")
        if changed and subscription.rotation_pending:
            # PDK has the new secret from now on: the old one stays valid for the overlap window.
            current.update(rotation_pending=False)
            _extend_previous_secret(subscription, now + overlap(), restart=True)
    subscription.refresh_from_db()


def _save_failure(subscription: PdkSubscription, version: int, error: str) -> None:
    log.warning("PDK push of subscription %s failed: %s", subscription.pk, error)
    rows = PdkSubscription.objects.filter(pk=subscription.pk)
    rows.update(remote_id=subscription.remote_id, last_error=error)
    rows.filter(config_version=version).exclude(sync_state=State.PENDING_DELETE).update(sync_state=State.ERROR)
    subscription.refresh_from_db()


def _extend_previous_secret(subscription: PdkSubscription, until=None, *, restart=False) -> None:
    """Keep the old secret valid while PDK may still sign with it: until the overlap window after
    PDK confirmed the new one (restart), or, before that, at least another window from now."""
    endpoint = subscription.endpoint
    if endpoint is None or not endpoint.previous_secret:
        return
    until = until or timezone.now() + overlap()
    current = endpoint.previous_secret_expires_at
    if restart or current is None or current < until:
        endpoint.previous_secret_expires_at = until
        # save() (not update()) so the ingress's endpoint cache forgets the old copy.
        endpoint.save(update_fields=["previous_secret_expires_at"])


# --- delete -------------------------------------------------------------------------------------


def delete(pk: int) -> str:
    """Delete the hook on PDK, then the row. Returns deleted, failed, skipped or busy."""
    with subscription_lock(pk) as got:
        if not got:
            return "busy"
        subscription = _load(pk)
        if subscription is None:
            return "skipped"
        if subscription.sync_state != State.PENDING_DELETE:
            return "skipped"
        return _delete(subscription, PdkClient(subscription.connection))


def _delete(subscription: PdkSubscription, client: PdkClient, *, hooks=None) -> str:
    try:
        hook_id = subscription.remote_id or _hook_with_our_url(subscription, client, hooks)
        if hook_id:
            try:
                client.delete_hook(hook_id)
            except PdkError as exc:
                if exc.status != 404:  # already gone is what we wanted
                    raise
    except PdkError as exc:
        subscription.last_error = str(exc)
        PdkSubscription.objects.filter(pk=subscription.pk).update(last_error=subscription.last_error)
        return "failed"
    with transaction.atomic():
        endpoint = subscription.endpoint
        subscription.delete()
        if endpoint is not None:
            # Kept for the events that name it; PDK sends nothing more to it.
            endpoint.active = False
            endpoint.save(update_fields=["active"])
    return "deleted"


# --- reconcile ----------------------------------------------------------------------------------


def reconcile(connection: PdkConnection) -> Summary:
    """Make PDK and the portal agree for one connection, and say what it took."""
    summary = Summary()
    with locked(f"pdk:connection-lock:{connection.pk}") as got:
        if not got:
            summary.errors.append(f"{connection.name}: a reconcile is already running")
            return summary
        _reconcile(connection, summary)
    return summary


def _reconcile(connection: PdkConnection, summary: Summary) -> None:
    now = timezone.now()
    subscriptions = PdkSubscription.objects.filter(connection=connection)
    # PDK switches a hook off at expiresAt by itself; the portal shows the same.
    summary.counts["expired"] = (
        subscriptions.filter(active=True, expires_at__lte=now)
        .exclude(sync_state=State.PENDING_DELETE)
        .update(active=False)
    )
    client = PdkClient(connection)
    try:
        hooks = client.list_hooks()
    except PdkError as exc:
        PdkConnection.objects.filter(pk=connection.pk).update(last_error=str(exc))
        summary.counts["failed"] += 1
        summary.errors.append(f"{connection.name}: {exc}")
        return
    remote = {str(hook["id"]): hook for hook in hooks}
    claimed: set[str] = set()
    for pk in subscriptions.order_by("pk").values_list("pk", flat=True):
        with subscription_lock(pk) as got:
            subscription = _load(pk) if got else None
            if subscription is None:
                continue  # busy with a push or a delete, or gone: the next reconcile looks again
            outcome = _reconcile_one(subscription, client, remote, claimed, hooks)
            summary.counts[outcome] += 1
            if outcome == "drifted" and subscription.sync_state == State.ERROR:
                summary.counts["failed"] += 1  # found drifted, and re-applying the portal's config failed
            if outcome == "failed" or subscription.sync_state == State.ERROR:
                summary.errors.append(f"{subscription.name}: {subscription.last_error}")
    for hook_id, hook in remote.items():
        if hook_id not in claimed and _import(connection, hook):
            summary.counts["imported"] += 1
    PdkConnection.objects.filter(pk=connection.pk).update(last_reconciled_at=timezone.now(), last_error="")


def _reconcile_one(subscription: PdkSubscription, client, remote: dict, claimed: set, hooks: list) -> str:
    if subscription.remote_id:
        claimed.add(subscription.remote_id)
    if subscription.sync_state == State.PENDING_DELETE:
        return _delete(subscription, client, hooks=hooks)
    hook = remote.get(subscription.remote_id) if subscription.remote_id else None

    if not subscription.managed:
        if hook is None:
            # Imported hook deleted on PDK: the mirror goes with it (the portal never owned it).
            subscription.delete()
            return "removed"
        subscription.mirror(hook)
        subscription.sync_state, subscription.last_synced_at, subscription.last_error = (
            State.IN_SYNC,
            timezone.now(),
            "",
        )
        subscription.save()
        return "unchanged"

    if subscription.remote_id and hook is None:
        _mark_drift(subscription, {"hook": {"portal": "exists", "pdk": "deleted on PDK"}})
        subscription.remote_id = ""
        _push(subscription, client, hooks=hooks, state_after=State.DRIFTED)
        claimed.add(subscription.remote_id)
        return "drifted"
    if hook is None:
        outcome = _push(subscription, client, hooks=hooks)  # never pushed (or its create was lost)
        claimed.add(subscription.remote_id)
        return outcome

    subscription.pull_counters(hook)
    subscription.save(update_fields=["user_id", "odometer"])
    if subscription.sync_state in (State.PENDING_PUSH, State.ERROR):
        return _push(subscription, client, hooks=hooks)
    differences = subscription.differences(hook)
    if differences:
        _mark_drift(subscription, differences)
        _push(subscription, client, hooks=hooks, state_after=State.DRIFTED)
        return "drifted"
    PdkSubscription.objects.filter(pk=subscription.pk, config_version=subscription.config_version).update(
        sync_state=State.IN_SYNC, last_synced_at=timezone.now(), last_error=""
    )
    return "unchanged"


def _mark_drift(subscription: PdkSubscription, differences: dict) -> None:
    log.warning("PDK hook of subscription %s drifted: %s", subscription.pk, sorted(differences))
    now = timezone.now()
    PdkSubscription.objects.filter(pk=subscription.pk).update(
        sync_state=State.DRIFTED, drift=differences, drift_detected_at=now
    )
    subscription.sync_state, subscription.drift, subscription.drift_detected_at = State.DRIFTED, differences, now


def _import(connection: PdkConnection, hook: dict) -> bool:
    subscription = PdkSubscription(connection=connection, managed=False, remote_id=str(hook["id"]))
    subscription.mirror(hook)
    subscription.sync_state, subscription.last_synced_at = State.IN_SYNC, timezone.now()
    try:
        with transaction.atomic():
            subscription.save()
    except IntegrityError:
        return False  # imported by a concurrent reconcile
    return True


def reconcile_all() -> dict[str, dict]:
    return {connection.name: reconcile(connection).as_dict() for connection in PdkConnection.objects.all()}

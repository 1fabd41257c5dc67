"""The domain verbs: the only code that changes building state (locks, activity, alarms).

Vendor handlers call these; they keep the invariants in one place: state is only ever moved
forward in vendor time, each vendor event counts once, and a clear that arrives before its raise
leaves no active alarm.
"""

from __future__ import annotations

from datetime import datetime

from django.db import IntegrityError, transaction

from portal.models import AccessGrant, Activity, Alarm, AlarmOccurrence, Lock, Placement, Resident

# kind -> (what a manager reads, default severity). Sites may override severities later.
ALARM_KINDS: dict[str, tuple[str, str]] = {
    "door_forced": ("Door forced open", Alarm.Severity.CRITICAL),
    "door_propped": ("Door propped open", Alarm.Severity.MAJOR),
    "duress": ("Duress", Alarm.Severity.CRITICAL),
    "controller_comm_loss": ("Controller communication lost", Alarm.Severity.MAJOR),
    "input_power_lost": ("Input power lost", Alarm.Severity.MAJOR),
    "battery_disconnected": ("Battery disconnected", Alarm.Severity.MINOR),
    "low_power_mode": ("Low power mode", Alarm.Severity.MINOR),
    "overcurrent": ("Overcurrent", Alarm.Severity.MAJOR),
    "panel_offline": ("Panel offline", Alarm.Severity.MAJOR),
    "reader_error": ("Card or Bluetooth error", Alarm.Severity.MINOR),
    "device_offline": ("Device offline", Alarm.Severity.MAJOR),
    "low_battery": ("Low battery", Alarm.Severity.MINOR),
    "tampered": ("Tampered", Alarm.Severity.CRITICAL),
    "access_denied": ("Access denied", Alarm.Severity.MINOR),
    "account_disconnected": ("Account disconnected", Alarm.Severity.MAJOR),
    "access_code_not_set": ("Access code not set", Alarm.Severity.MINOR),
    "noise": ("Noise", Alarm.Severity.MINOR),
    "smoke": ("Smoke", Alarm.Severity.CRITICAL),
    "water_leak": ("Water leak", Alarm.Severity.MAJOR),
    "contact": ("Contact sensor", Alarm.Severity.MINOR),
    "configuration_drift": ("Configuration drift", Alarm.Severity.MINOR),
}
SEVERITY_RANK = {Alarm.Severity.MINOR: 0, Alarm.Severity.MAJOR: 1, Alarm.Severity.CRITICAL: 2}


def placement(kind: str, external_id: str, name: str = "") -> Placement:
    found, _ = Placement.objects.get_or_create(kind=kind, external_id=external_id, defaults={"name": name})
    if name and found.name != name:
        Placement.objects.filter(pk=found.pk).update(name=name)
        found.name = name
    return found


def lock(vendor: str, external_id: str, *, name: str = "", place: Placement | None = None) -> Lock:
    """The lock, created on first sight and row-locked for the rest of the transaction, so events
    for one lock handled by two workers at once are applied one after the other."""
    defaults = {"name": name, "placement": place, "site_id": place.site_id if place else None}
    try:
        with transaction.atomic():
            Lock.objects.get_or_create(vendor=vendor, external_id=external_id, defaults=defaults)
    except IntegrityError:
        pass  # created by a concurrent worker: ours is the same lock
    found = Lock.objects.select_for_update().get(vendor=vendor, external_id=external_id)
    changes = {}
    if name and found.name != name:
        changes["name"] = name
    if place and found.placement_id is None:
        changes |= {"placement": place, "site_id": place.site_id}
    if changes:
        for field, value in changes.items():
            setattr(found, field, value)
        found.save(update_fields=list(changes))
    return found


def move_forward(obj, clock: str, at: datetime | None, **values) -> bool:
    """Set these fields unless their state already reflects a later vendor time (``<clock>_as_of``)."""
    as_of = f"{clock}_as_of"
    current = getattr(obj, as_of)
    if at is not None and current is not None and at < current:
        return False
    for field, value in values.items():
        setattr(obj, field, value)
    setattr(obj, as_of, at or current)
    obj.save(update_fields=[*values, as_of])
    return True


def record_activity(event, lock_: Lock | None, at: datetime, *, action: str, result: str = "", **fields) -> Activity:
    activity, _ = Activity.objects.get_or_create(
        event=event,
        defaults={
            "occurred_at": at,
            "lock": lock_,
            "site_id": lock_.site_id if lock_ else None,
            "action": action,
            "result": result,
            **fields,
        },
    )
    if lock_ and (lock_.last_activity_at is None or at > lock_.last_activity_at):
        lock_.last_activity_at = at
        lock_.save(update_fields=["last_activity_at"])
    return activity


def raise_alarm(
    kind: str, subject: str, event, at: datetime, *, lock_: Lock | None = None, site_id=None, severity: str = ""
) -> Alarm:
    """Open an alarm, or count one more occurrence of the open one; once per event.

    A raise older than a clear already seen for the same subject belongs to that cleared episode
    (events out of order): it is counted there and opens nothing.
    """
    seen = AlarmOccurrence.objects.filter(event=event).select_related("alarm").first()
    if seen:
        return seen.alarm
    alarms = Alarm.objects.select_for_update().filter(kind=kind, subject=subject)
    alarm = alarms.filter(state=Alarm.State.CLEARED, cleared_at__gte=at).order_by("cleared_at").first()
    alarm = alarm or alarms.filter(state__in=Alarm.OPEN_STATES).first()
    if alarm is None:
        try:
            with transaction.atomic():
                alarm = Alarm.objects.create(
                    kind=kind,
                    subject=subject,
                    severity=ALARM_KINDS[kind][1],
                    lock=lock_,
                    site_id=lock_.site_id if lock_ else site_id,
                    raised_at=at,
                    last_raised_at=at,
                    raised_by=event,
                )
        except IntegrityError:  # opened by a concurrent worker a moment ago
            alarm = alarms.get(state__in=Alarm.OPEN_STATES)
    alarm.occurrences += 1
    alarm.raised_at = min(filter(None, (alarm.raised_at, at)))
    alarm.last_raised_at = max(filter(None, (alarm.last_raised_at, at)))
    alarm.raised_by = alarm.raised_by or event
    if severity and SEVERITY_RANK[severity] > SEVERITY_RANK[alarm.severity]:
        alarm.severity = severity  # escalates, never calms down by itself
    alarm.save(update_fields=["occurrences", "raised_at", "last_raised_at", "raised_by", "severity"])
    AlarmOccurrence.objects.create(alarm=alarm, event=event, occurred_at=at)
    return alarm


def clear_alarm(kind: str, subject: str, event, at: datetime, *, lock_: Lock | None = None, site_id=None) -> Alarm:
    """Clear the open alarm raised at or before this time; otherwise remember the clear, so a raise
    that is older and arrives later opens nothing."""
    done = Alarm.objects.filter(cleared_by=event).first()
    if done:
        return done
    open_alarm = (
        Alarm.objects.select_for_update().filter(kind=kind, subject=subject, state__in=Alarm.OPEN_STATES).first()
    )
    if open_alarm and (open_alarm.raised_at is None or open_alarm.raised_at <= at):
        open_alarm.state, open_alarm.cleared_at, open_alarm.cleared_by = Alarm.State.CLEARED, at, event
        open_alarm.save(update_fields=["state", "cleared_at", "cleared_by"])
        return open_alarm
    return Alarm.objects.create(
        kind=kind,
        subject=subject,
        severity=ALARM_KINDS[kind][1],
        lock=lock_,
        site_id=lock_.site_id if lock_ else site_id,
        state=Alarm.State.CLEARED,
        cleared_at=at,
        cleared_by=event,
    )


def resident(vendor: str, external_id: str, **fields) -> Resident:
    """The resident, created on first sight; names and emails given are kept up to date."""
    found, created = Resident.objects.get_or_create(vendor=vendor, external_id=external_id, defaults=fields)
    changed = {k: v for k, v in fields.items() if v and getattr(found, k) != v}
    if changed and not created:
        Resident.objects.filter(pk=found.pk).update(**changed)
    return found


def grant_access(person: Resident, lock_: Lock, at: datetime, *, level: str = "", granted_by: str = "") -> AccessGrant:
    grant, _ = AccessGrant.objects.select_for_update().get_or_create(resident=person, lock=lock_)
    if grant.granted_at is None or at >= grant.granted_at:
        grant.granted_at = at
        grant.level = level or grant.level
        grant.granted_by = granted_by or grant.granted_by
        grant.save(update_fields=["granted_at", "level", "granted_by"])
    return grant


def revoke_access(person: Resident, lock_: Lock, at: datetime) -> AccessGrant:
    grant, _ = AccessGrant.objects.select_for_update().get_or_create(resident=person, lock=lock_)
    if grant.revoked_at is None or at > grant.revoked_at:
        grant.revoked_at = at
        grant.save(update_fields=["revoked_at"])
    return grant

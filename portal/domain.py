"""The domain verbs: the only code that changes building state (locks, activity, alarms).

Vendor handlers call these; they keep the invariants in one place: state is only ever moved
forward in vendor time, each vendor event counts once, and a clear that arrives before its raise
leaves no active alarm.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import TypeVar

from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from portal import signals
from portal.models import (
    AccessGrant,
    Activity,
    Alarm,
    AlarmChange,
    AlarmOccurrence,
    Camera,
    Credential,
    Intercom,
    Lock,
    LockAlias,
    Placement,
    Resident,
    Site,
)
from portal.sql import Joined, insert

Row = TypeVar("Row", bound=models.Model)

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


# Set inside unit_of_work(): the placements met while processing one batch of events, by (kind,
# external id) (nearly every event names a panel, hub or account, and a batch names few), and
# whether alarms changed (the notification rules are told once, when the batch commits).
_unit_of_work: ContextVar[dict | None] = ContextVar("unit_of_work", default=None)


@contextmanager
def unit_of_work():
    """Events processed together in one transaction share their lookups and their commit's news.
    Use inside the transaction: leaving it arranges what happens on commit."""
    work = {"placements": {}, "alarms_changed": False}
    token = _unit_of_work.set(work)
    try:
        yield
    finally:
        _unit_of_work.reset(token)
    if work["alarms_changed"]:
        transaction.on_commit(_tell_alarm_listeners)


@contextmanager
def rolled_back_together():
    """Wrap work done in a savepoint inside a unit of work: if it fails (and its savepoint rolls
    back), forget what it looked up or created and the alarm changes it announced."""
    work = _unit_of_work.get()
    alarms_changed = work["alarms_changed"] if work is not None else False
    try:
        yield
    except BaseException:
        if work is not None:
            work["placements"], work["alarms_changed"] = {}, alarms_changed
        raise


# Set while one event's handler runs (handling()): where the event turned out to be, for readers
# of the event that are not the building model (notification rules scoped to sites).
_handling: ContextVar[dict | None] = ContextVar("handling", default=None)


@contextmanager
def handling():
    """Run one event's handler inside; yields where it happened once it is done: the first lock it
    met (and that lock's site), else the site of the first placement (panel, hub, account) it met."""
    where = {"lock_id": None, "site_id": None, "placement_site_id": None}
    token = _handling.set(where)
    try:
        yield where
    finally:
        _handling.reset(token)
    placement_site_id = where.pop("placement_site_id")
    where["site_id"] = where["site_id"] or placement_site_id


def _met(*, lock_: Lock | None = None, place: Placement | None = None) -> None:
    where = _handling.get()
    if where is None:
        return
    if lock_ is not None and where["lock_id"] is None:
        where["lock_id"], where["site_id"] = lock_.pk, lock_.site_id
    if place is not None and where["placement_site_id"] is None:
        where["placement_site_id"] = place.site_id


def placement(kind: str, external_id: str, name: str = "") -> Placement:
    work = _unit_of_work.get()
    seen = work["placements"] if work is not None else None
    found = seen.get((kind, external_id)) if seen is not None else None
    if found is None:
        found, _ = Placement.objects.get_or_create(kind=kind, external_id=external_id, defaults={"name": name})
        if seen is not None:
            seen[kind, external_id] = found
    if name and found.name != name:
        Placement.objects.filter(pk=found.pk).update(name=name)
        found.name = name
    _met(place=found)
    return found


def place(found: Placement, site: Site | None) -> Placement:
    """Put a panel, hub or account in a building; its locks and equipment move with it."""
    found.site = site
    found.save(update_fields=["site"])
    found.locks.update(site=site)
    for model in (Camera, Intercom):
        model.objects.filter(placement=found).update(site=site)
    # What already happened at its doors is seen by that site's managers too.
    for model in (Activity, Alarm):
        model.objects.filter(lock__placement=found).update(site=site)
    return found


def _row_locked(model: type[Row], keys: dict, defaults: dict, *, looked_already: bool = False) -> Row:
    """The row with these keys, created on first sight and row-locked for the rest of the
    transaction, so events for one thing handled by two workers at once apply one after the other.
    One query when the row exists (the usual case)."""
    rows = model.objects.select_for_update().filter(**keys).order_by("pk")
    found = None if looked_already else rows.first()  # looked_already: the caller's lookup found none
    if found is None:
        try:
            with transaction.atomic():
                # Nobody else can see, let alone lock, a row until our transaction commits.
                return model.objects.create(**keys, **defaults)
        except IntegrityError:
            pass  # created by a concurrent worker: ours is the same row
        found = rows.get()
    return found


def _adopt(found, *, name: str, place: Placement | None) -> None:
    """Keep the vendor's latest name, and home a thing first seen without a placement."""
    changes = {}
    if name and found.name != name:
        changes["name"] = name
    if place and found.placement_id is None:
        changes |= {"placement": place, "site_id": place.site_id}
    if changes:
        for field, value in changes.items():
            setattr(found, field, value)
        found.save(update_fields=list(changes))


def lock(
    vendor: str,
    external_id: str,
    *,
    name: str = "",
    place: Placement | None = None,
    reported_name: tuple[str, datetime] | None = None,
) -> Lock:
    """The lock (row-locked), found under its current id or an id it had before.

    ``reported_name`` (name, vendor time), instead of ``name``, for callers that keep the name with
    ``rename``: a lock created here starts with that name, as ``rename`` would leave it, so it needs
    no rename; a lock found is left as it is (the caller weighs the name against the one it has).
    """
    # At most one row (lock_unique_per_vendor); in SQL, as every door event asks it.
    found = _LOCK.first("lock.vendor = %s AND lock.external_id = %s", [vendor, external_id], locked=True)
    found = found[0] if found else None
    if found is None:
        alias = LockAlias.objects.filter(vendor=vendor, external_id=external_id).values_list("lock_id", flat=True)
        if alias_id := alias.first():
            found = Lock.objects.select_for_update().get(pk=alias_id)
        else:
            defaults = {"name": name, "placement": place, "site_id": place.site_id if place else None}
            if reported_name is not None and _is_name(reported_name[0]):
                reported, at = reported_name
                defaults |= {"name": reported, "details": {"name_reported": _reading(at, {"name": reported})}}
            keys = {"vendor": vendor, "external_id": external_id}
            found = _row_locked(Lock, keys, defaults, looked_already=True)
    _adopt(found, name=name, place=place)
    _met(lock_=found)
    return found


def rename_lock(vendor: str, previous_id: str, new_id: str, at: datetime | None) -> Lock:
    """The vendor now names this lock differently (SPK LockUuidChanged). The old id stays as an
    alias; if events under the new id came first, what they created is merged into one lock."""
    current = lock(vendor, previous_id)
    if current.external_id == new_id:
        return current  # already renamed: this event was processed before
    newer = Lock.objects.select_for_update().filter(vendor=vendor, external_id=new_id).order_by().first()
    if newer is not None:
        _merge_lock(newer, into=current)
    LockAlias.objects.get_or_create(
        vendor=vendor, external_id=current.external_id, defaults={"lock": current, "replaced_at": at}
    )
    current.external_id = new_id
    current.save(update_fields=["external_id"])
    return current


# A lock's state fields, grouped by the "<clock>_as_of" time they move with.
LOCK_CLOCKS = {
    "locked": ("locked",),
    "door_open": ("door_open",),
    "online": ("online",),
    "battery": ("battery_level", "battery_status"),
}


def _merge_lock(duplicate: Lock, *, into: Lock) -> None:
    for model in (Activity, Alarm, Camera, Credential):
        model.objects.filter(lock=duplicate).update(lock=into)
    for grant in AccessGrant.objects.filter(lock=duplicate):
        kept = AccessGrant.objects.filter(lock=into, resident=grant.resident_id).first()
        if kept is None:
            AccessGrant.objects.filter(pk=grant.pk).update(lock=into)
            continue
        kept.granted_at = max(filter(None, (kept.granted_at, grant.granted_at)), default=None)
        kept.revoked_at = max(filter(None, (kept.revoked_at, grant.revoked_at)), default=None)
        kept.save(update_fields=["granted_at", "revoked_at"])
    LockAlias.objects.filter(lock=duplicate).update(lock=into)
    for clock, fields in LOCK_CLOCKS.items():
        at = getattr(duplicate, f"{clock}_as_of")
        if at is not None:
            move_forward(into, clock, at, **{f: getattr(duplicate, f) for f in fields})
    into.details = {**duplicate.details, **into.details}
    into.last_activity_at = max(filter(None, (into.last_activity_at, duplicate.last_activity_at)), default=None)
    into.save(update_fields=["details", "last_activity_at"])
    duplicate.delete()


def equipment(model: type[Row], vendor: str, external_id: str, *, name: str = "", place=None) -> Row:
    """A camera or intercom (row-locked), created on first sight; it inherits its placement's site."""
    defaults = {"name": name, "placement": place, "site_id": place.site_id if place else None}
    found = _row_locked(model, {"vendor": vendor, "external_id": external_id}, defaults)
    _adopt(found, name=name, place=place)
    return found


def keep_details(obj, **values) -> None:
    """Remember vendor fields on a row's details, saving only when something changed."""
    values = {k: v for k, v in values.items() if v is not None}
    if any(obj.details.get(k) != v for k, v in values.items()):
        obj.details = {**obj.details, **values}
        obj.save(update_fields=["details"])


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


def record_activity(event, lock_: Lock | None, at: datetime, *, action: str, result: str = "", **fields) -> None:
    """One activity row per event (a second call for the same event adds nothing)."""
    site_id = lock_.site_id if lock_ else fields.pop("site_id", None)
    row = Activity(event=event, occurred_at=at, lock=lock_, site_id=site_id, action=action, result=result, **fields)
    Activity.objects.bulk_create([row], ignore_conflicts=True)
    if lock_ and (lock_.last_activity_at is None or at > lock_.last_activity_at):
        lock_.last_activity_at = at
        lock_.save(update_fields=["last_activity_at"])


def raise_alarm(
    kind: str, subject: str, event, at: datetime, *, lock_: Lock | None = None, site_id=None, severity: str = ""
) -> Alarm:
    """Open an alarm, or count one more occurrence of the open one; once per event.

    A raise older than a clear already seen for the same subject belongs to that cleared episode
    (events out of order): it is counted there and opens nothing.

    ``lock_``: the lock the subject is about, as ``lock`` returned it, row-locked until this
    transaction ends; every raise for the subject comes with it, so they apply one after the other.
    """
    # Nearly always none: the id alone is cheaper to ask for than the occurrence and its alarm.
    if seen := AlarmOccurrence.objects.filter(event=event).values_list("alarm_id", flat=True)[:1]:
        return Alarm.objects.get(pk=seen[0])
    alarm = _alarm_a_raise_counts_on(kind, subject, at)
    opened = False
    if alarm is None:
        fields = {
            "kind": kind,
            "subject": subject,
            "severity": max(filter(None, (ALARM_KINDS[kind][1], severity)), key=SEVERITY_RANK.__getitem__),
            "lock": lock_,
            "site_id": lock_.site_id if lock_ else site_id,
            "raised_at": at,
            "last_raised_at": at,
            "raised_by": event,
            "occurrences": 1,
        }
        if lock_ is not None:
            # Another worker raising for this subject waits for the lock's row until we commit, and
            # then finds this alarm: no concurrent insert to meet, so no savepoint (two round trips).
            alarm, opened = insert(Alarm(**fields)), True
        else:
            try:
                with transaction.atomic():
                    alarm = Alarm.objects.create(**fields)
                opened = True
            except IntegrityError:  # opened by a concurrent worker a moment ago
                alarm = Alarm.objects.select_for_update().get(kind=kind, subject=subject, state__in=Alarm.OPEN_STATES)
    if not opened:  # one more occurrence of an open alarm, or of the cleared episode it belongs to
        alarm.occurrences += 1
        alarm.raised_at = min(filter(None, (alarm.raised_at, at)))
        alarm.last_raised_at = max(filter(None, (alarm.last_raised_at, at)))
        if alarm.raised_by_id is None:  # (no query for the event that raised it)
            alarm.raised_by = event
        if severity and SEVERITY_RANK[severity] > SEVERITY_RANK[alarm.severity]:
            alarm.severity = severity  # escalates, never calms down by itself
        alarm.save(update_fields=["occurrences", "raised_at", "last_raised_at", "raised_by", "severity"])
    insert(AlarmOccurrence(alarm=alarm, event=event, occurred_at=at))
    _announce(alarm, "raised", event)
    return alarm


def _alarm_a_raise_counts_on(kind: str, subject: str, at: datetime) -> Alarm | None:
    """The cleared episode a raise at ``at`` belongs to (the earliest cleared at or after it), else
    the open alarm (at most one); only the row chosen is row-locked. In SQL: the ORM took longer
    to build this query (its CASE ordering) than the database took to answer it."""
    cleared, (active, acknowledged) = Alarm.State.CLEARED, Alarm.OPEN_STATES
    at = connection.ops.adapt_datetimefield_value(at)  # as the ORM stores it (SQLite: naive UTC text)
    found = _ALARM.first(
        "alarm.kind = %s AND alarm.subject = %s"
        " AND ((alarm.state = %s AND alarm.cleared_at >= %s) OR alarm.state IN (%s, %s))"
        " ORDER BY CASE WHEN alarm.state = %s AND alarm.cleared_at >= %s THEN 0 ELSE 1 END, alarm.cleared_at, alarm.id",
        [kind, subject, cleared, at, active, acknowledged, cleared, at],
        locked=True,
    )
    return found[0] if found else None


_ALARM = Joined((Alarm, "alarm"))
_LOCK = Joined((Lock, "lock"))


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
        _announce(open_alarm, "cleared", event)
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


def set_status(obj, at: datetime | None, status: str, **values) -> bool:
    """A lifecycle status (claimed, suspended, deleted, …), moved forward in vendor time only."""
    return move_forward(obj, "status", at, status=status, **values)


def issue_credential(
    vendor: str,
    kind: str,
    external_id: str,
    at: datetime,
    *,
    resident_: Resident | None = None,
    lock_: Lock | None = None,
    **fields,
) -> Credential:
    """A key or credential handed out; later issues refresh its fields, earlier ones don't."""
    found = _row_locked(Credential, {"vendor": vendor, "kind": kind, "external_id": external_id}, {})
    if found.issued_at is None or at >= found.issued_at:
        found.issued_at = at
        found.resident = resident_ or found.resident
        found.lock = lock_ or found.lock
        for field, value in fields.items():
            if value is not None:
                setattr(found, field, value)
        found.save()
    return found


def remove_credential(
    vendor: str,
    kind: str,
    external_id: str,
    at: datetime,
    *,
    resident_: Resident | None = None,
    lock_: Lock | None = None,
) -> Credential:
    """A key or credential taken away; an issue older than this removal doesn't bring it back."""
    found = _row_locked(Credential, {"vendor": vendor, "kind": kind, "external_id": external_id}, {})
    if found.removed_at is None or at > found.removed_at:
        found.removed_at = at
        found.resident = found.resident or resident_
        found.lock = found.lock or lock_
        found.save(update_fields=["removed_at", "resident", "lock"])
    return found


class AlarmStateError(Exception):
    """A person asked for a transition the alarm's state doesn't allow; the message says why."""


def acknowledge_alarm(alarm: Alarm, user, note: str = "") -> Alarm:
    """Someone has seen it and is on it; the alarm stays open until cleared or resolved."""
    with transaction.atomic():
        alarm = Alarm.objects.select_for_update().get(pk=alarm.pk)
        if alarm.state != Alarm.State.ACTIVE:
            raise AlarmStateError(f"only active alarms can be acknowledged; this one is {alarm.state}")
        alarm.state, alarm.acknowledged_at, alarm.acknowledged_by = Alarm.State.ACKNOWLEDGED, timezone.now(), user
        alarm.note = _append_note(alarm.note, user, "acknowledged", note)
        alarm.save(update_fields=["state", "acknowledged_at", "acknowledged_by", "note"])
    return alarm


def resolve_alarm(alarm: Alarm, user, note: str = "") -> Alarm:
    """A person closes an open alarm (kinds with no clearing event, or handled on site)."""
    with transaction.atomic():
        alarm = Alarm.objects.select_for_update().get(pk=alarm.pk)
        if alarm.state not in Alarm.OPEN_STATES:
            raise AlarmStateError(f"only open alarms can be resolved; this one is {alarm.state}")
        alarm.state, alarm.resolved_at, alarm.resolved_by = Alarm.State.RESOLVED, timezone.now(), user
        alarm.note = _append_note(alarm.note, user, "resolved", note)
        alarm.save(update_fields=["state", "resolved_at", "resolved_by", "note"])
    return alarm


def reopen_alarm(alarm: Alarm, user, note: str = "") -> Alarm:
    """A person reopens a resolved or acknowledged alarm: it is active again (unless another alarm
    of the same kind is already open for the same subject)."""
    already_open = AlarmStateError("another alarm of this kind is already open for the same door or device")
    try:
        with transaction.atomic():
            if alarm.lock_id is not None:
                # The door's row first, as a worker raising an alarm for it takes it: the two then
                # go one after the other, and the check below sees the worker's alarm.
                list(Lock.objects.select_for_update().filter(pk=alarm.lock_id).order_by().values_list("pk"))
            alarm = Alarm.objects.select_for_update().get(pk=alarm.pk)
            if alarm.state not in (Alarm.State.RESOLVED, Alarm.State.ACKNOWLEDGED):
                raise AlarmStateError(
                    f"only resolved or acknowledged alarms can be reopened; this one is {alarm.state}"
                )
            if (
                alarm.state == Alarm.State.RESOLVED
                and Alarm.objects.filter(kind=alarm.kind, subject=alarm.subject, state__in=Alarm.OPEN_STATES).exists()
            ):
                raise already_open
            alarm.state, alarm.resolved_at, alarm.resolved_by = Alarm.State.ACTIVE, None, None
            alarm.acknowledged_at = alarm.acknowledged_by = None
            alarm.note = _append_note(alarm.note, user, "reopened", note or "(no note)")
            fields = ["state", "resolved_at", "resolved_by", "acknowledged_at", "acknowledged_by", "note"]
            alarm.save(update_fields=fields)
    except IntegrityError as exc:  # an alarm without a door, opened by a worker between the check and the save
        if "alarm_open_once" not in str(exc):
            raise
        raise already_open from None
    return alarm


def _append_note(existing: str, user, verb: str, note: str) -> str:
    if not note.strip():
        return existing
    line = f"{timezone.now():%Y-%m-%d %H:%M} {user} {verb}: {note.strip()}"
    return f"{existing}\n{line}" if existing else line


def resident_for_update(vendor: str, external_id: str) -> Resident:
    """The resident (row-locked), created on first sight: events about one person apply one after
    the other, and two workers seeing a new person at once make one row, not a failed event."""
    return _row_locked(Resident, {"vendor": vendor, "external_id": external_id}, {})


def _details_time(value) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _reading(at: datetime, values: dict) -> dict:
    """A reading as keep_reading keeps it: its values stamped with their vendor time."""
    return {**values, "as_of": at.isoformat()}


def keep_reading(obj, at: datetime, *path: str, merge: bool = False, **values) -> bool:
    """Keep a reading stamped with its vendor time at ``details[path…]`` (a controller's voltage, a
    door's mode), unless the one kept there is as new or newer: the first of two equal times wins,
    so replays in another order change nothing.

    With ``merge``, a newer reading updates the fields it names and keeps the others, and an older
    one only fills fields nobody reported yet (partial updates such as PDK ``newState``).
    """
    fresh = type(obj).objects.select_for_update().only("details").get(pk=obj.pk)
    details = fresh.details if isinstance(fresh.details, dict) else {}
    parents = [details]
    for key in path[:-1]:
        child = parents[-1].get(key)
        parents.append(child if isinstance(child, dict) else {})
    kept = parents[-1].get(path[-1])
    kept = kept if isinstance(kept, dict) else {}
    kept_at = _details_time(kept.get("as_of"))
    newer = kept_at is None or at > kept_at
    if newer:
        reading = _reading(at, {**(kept if merge else {}), **values})
    elif merge:
        reading = {**values, **kept}
    else:
        return False
    if reading == kept:
        return False
    for depth in range(len(path) - 1, -1, -1):
        reading = {**parents[depth], path[depth]: reading}
    obj.details = reading
    type(obj).objects.filter(pk=obj.pk).update(details=reading)
    return newer


def _is_name(name) -> bool:
    return bool(name) and isinstance(name, str)


def rename(obj, name: str, at: datetime) -> bool:
    """The vendor's name for a thing, moved forward in vendor time (its as-of kept in details), so
    a late event carrying an old name does not undo a rename."""
    if not _is_name(name):
        return False
    if not keep_reading(obj, at, "name_reported", name=name):
        return False
    if obj.name != name:
        obj.name = name
        type(obj).objects.filter(pk=obj.pk).update(name=name)
    return True


def lock_presence(lock_: Lock, at: datetime, *, present: bool) -> bool:
    """The vendor deleted the lock, or created it (again) under the same id. Moves forward in vendor
    time; a deletion wins a tie with a creation."""
    kept_at = _details_time(lock_.details.get("presence_as_of")) if isinstance(lock_.details, dict) else None
    if kept_at is not None and (at < kept_at or (at == kept_at and present)):
        return False
    removed_at = None if present else at
    if lock_.removed_at == removed_at and kept_at == at:
        return False
    lock_.removed_at = removed_at
    lock_.details = {**lock_.details, "presence_as_of": at.isoformat()}
    lock_.save(update_fields=["removed_at", "details"])
    return True


def move_fields_forward(obj, clock: str, at: datetime, **fields) -> bool:
    """Set fields of a row that has no ``<clock>_as_of`` column (a credential's label or validity),
    moving forward in vendor time: the reading kept at ``details[clock]`` says as of when."""
    reading = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in fields.items()}
    if not keep_reading(obj, at, clock, **reading):
        return False
    changed = {k: v for k, v in fields.items() if getattr(obj, k) != v}
    if changed:
        for field, value in changed.items():
            setattr(obj, field, value)
        type(obj).objects.filter(pk=obj.pk).update(**changed)
    return True


def credential(vendor: str, kind: str, external_id: str, *, lock_: Lock | None = None) -> Credential:
    """The credential (row-locked), created on first sight without issuing it: for events that
    report on a credential (its status, a failure) rather than hand it out or take it away."""
    found = _row_locked(Credential, {"vendor": vendor, "kind": kind, "external_id": external_id}, {"lock": lock_})
    if lock_ is not None and found.lock_id is None:
        found.lock = lock_
        found.save(update_fields=["lock"])
    return found


def keep_fields(obj, **values) -> bool:
    """Set model fields whose values the caller has already settled in vendor time (a resident's
    phone or a camera's lock behind a keep_reading clock, a temp key's window from its merged
    terms), saving only what changed."""
    changed = []
    for name, value in values.items():
        field = obj._meta.get_field(name)
        wanted = value.pk if field.is_relation and value is not None else value
        if getattr(obj, field.attname) != wanted:
            setattr(obj, name, value)
            changed.append(name)
    if changed:
        obj.save(update_fields=changed)
    return bool(changed)


def _announce(alarm: Alarm, change: str, event) -> None:
    """Record the change and the event that made it for the notification rules (in this
    transaction: durable) and have them told once this transaction commits; a batch of events
    tells them once, when it commits."""
    insert(AlarmChange(alarm=alarm, change=change, occurrences=alarm.occurrences, event=event))
    work = _unit_of_work.get()
    if work is not None:
        work["alarms_changed"] = True
    else:
        transaction.on_commit(_tell_alarm_listeners)


def _tell_alarm_listeners() -> None:
    signals.alarm_changes_committed.send(sender=AlarmChange)

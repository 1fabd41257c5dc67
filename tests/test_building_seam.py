"""Seam events become locks, activity and alarms, in vendor-time order."""

import json

import pytest

from events import processing
from events.models import Event
from portal.models import Activity, Alarm, AlarmOccurrence, Camera, Credential, Lock, Placement, Resident, Site
from tests.vendors import fixture_bytes, fixture_files

pytestmark = pytest.mark.django_db


@pytest.fixture
def deliver(post, endpoint_for):
    endpoint = endpoint_for("seam")

    def _deliver(event_type: str, occurred_at: str, **changes) -> Event:
        payload = json.loads(fixture_bytes("seam", f"{event_type}.json"))
        payload.update(event_id=f"{event_type}-{occurred_at}", occurred_at=occurred_at, **changes)
        event_id = post(endpoint, json.dumps(payload).encode()).json()["event_id"]
        processing.process(event_id)
        return Event.objects.get(pk=event_id)

    return _deliver


def test_unlock_then_lock_leaves_the_lock_locked_with_two_activities(deliver):
    deliver("lock.unlocked", "2026-01-01T10:00:00Z")
    deliver("lock.locked", "2026-01-01T10:01:00Z")

    lock = Lock.objects.get()
    assert (lock.vendor, lock.locked) == ("seam", True)
    assert list(Activity.objects.order_by("occurred_at").values_list("action", "method")) == [
        ("unlock", "keycode"),
        ("lock", "keycode"),
    ]


def test_events_delivered_newest_first_end_in_the_same_state(deliver):
    deliver("lock.locked", "2026-01-01T10:01:00Z")
    deliver("lock.unlocked", "2026-01-01T10:00:00Z")
    assert Lock.objects.get().locked is True


def test_device_offline_alarm_and_its_clear(deliver):
    deliver("device.disconnected", "2026-01-01T10:00:00Z")
    assert (Lock.objects.get().online, Alarm.objects.get().state) == (False, "active")
    deliver("device.connected", "2026-01-01T10:10:00Z")
    assert (Lock.objects.get().online, Alarm.objects.get().state) == (True, "cleared")


def test_critical_battery_escalates_the_low_battery_alarm_and_good_clears_it(deliver):
    deliver("device.battery_status_changed", "2026-01-01T10:00:00Z", battery_status="low", battery_level=0.15)
    deliver("device.battery_status_changed", "2026-01-01T11:00:00Z", battery_status="critical", battery_level=0.04)
    alarm = Alarm.objects.get()
    assert (alarm.state, alarm.severity, alarm.occurrences) == ("active", "major", 2)
    assert Lock.objects.get().battery_level == 0.04

    deliver("device.battery_status_changed", "2026-01-01T12:00:00Z", battery_status="good", battery_level=0.9)

    alarm.refresh_from_db()
    assert alarm.state == "cleared"
    assert (Lock.objects.get().battery_status, Lock.objects.get().battery_level) == ("good", 0.9)


def test_access_denied_is_recorded_and_raises_a_minor_alarm(deliver):
    deliver("lock.access_denied", "2026-01-01T10:00:00Z")
    assert Activity.objects.get().result == "denied"
    assert (Alarm.objects.get().kind, Alarm.objects.get().severity) == ("access_denied", "minor")


# --- every family, from the fixture files ---------------------------------------------------------

DEVICE = "00000000-0000-0000-0000-000000000000"
ACCESS_CODE = "8b1c6e47-3f0a-4d6e-9a51-2c7d9e0f4b13"


def process_all_fixtures(post, endpoint) -> list[int]:
    ids = [post(endpoint, path.read_bytes()).json()["event_id"] for path in fixture_files("seam")]
    for event_id in ids:
        processing.process(event_id)
    return ids


def building_state() -> dict:
    """What the fixtures built: counts and the state a manager sees."""
    counts = {model.__name__: model.objects.count() for model in (Lock, Credential, Resident, Activity, Alarm, Camera)}
    counts["AlarmOccurrence"] = AlarmOccurrence.objects.count()
    counts["Placement"] = Placement.objects.count()
    return {
        "counts": counts,
        "locks": list(Lock.objects.order_by("external_id").values_list("external_id", "name", "removed_at", "details")),
        "alarms": list(Alarm.objects.order_by("kind", "subject", "id").values_list("kind", "subject", "state")),
        "credentials": list(
            Credential.objects.order_by("kind").values_list("kind", "status", "label", "issued_at", "removed_at")
        ),
        "placements": list(Placement.objects.order_by("kind").values_list("kind", "online", "status")),
    }


def test_every_seam_fixture_is_processed_into_the_building(post, endpoint_for):
    ids = process_all_fixtures(post, endpoint_for("seam"))

    failed = Event.objects.filter(pk__in=ids).exclude(status="processed").values_list("event_type", "last_error")
    assert list(failed) == []
    lock = Lock.objects.get(external_id=DEVICE)
    assert lock.name == "Front Door (Lobby)"  # device.name_changed is the newest name in the fixtures
    assert lock.details["accessory_keypad"]["connected"] is False  # keypad_disconnected is newer
    assert lock.details["subscription"]["required"] is False
    assert Lock.objects.get(external_id=f"acs_entrance:{'d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6'}").removed_at
    code = Credential.objects.get(kind="access_code")
    assert (code.external_id, code.lock, code.label) == (ACCESS_CODE, lock, "Guest 204 (late checkout)")
    assert Credential.objects.get(kind="card").status in {"deleted", "invalidated", "issued", "reissued"}
    assert Resident.objects.get(vendor="seam").status in {"active", "deleted"}
    assert Camera.objects.get().details["last_activation"]["activation_reason"] == "motion_detected"
    account = Placement.objects.get(kind="seam_account")
    assert account.online is not None and account.status
    assert set(Activity.objects.values_list("action", flat=True)) >= {"doorbell", "remote lock", "remote unlock"}
    kinds = set(Alarm.objects.values_list("kind", flat=True))
    assert kinds >= {"noise", "account_disconnected", "access_code_not_set", "controller_comm_loss"}


def test_processing_every_seam_fixture_twice_changes_nothing_more(post, endpoint_for):
    ids = process_all_fixtures(post, endpoint_for("seam"))
    once = building_state()

    processing.replay(Event.objects.filter(pk__in=ids))
    for event_id in ids:
        processing.process(event_id)

    assert building_state() == once
    assert set(Event.objects.values_list("status", flat=True)) == {"processed"}


# --- connected accounts ------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["oldest first", "newest first"])
def test_account_disconnected_then_reconnected_leaves_no_active_alarm(deliver, order):
    events = [
        ("connected_account.disconnected", "2026-01-01T10:00:00Z"),
        ("connected_account.connected", "2026-01-01T10:30:00Z"),
    ]
    for event_type, at in events if order == "oldest first" else reversed(events):
        deliver(event_type, at)

    account = Placement.objects.get(kind="seam_account", external_id=DEVICE)
    assert account.online is True
    assert not Alarm.objects.filter(kind="account_disconnected", state__in=Alarm.OPEN_STATES).exists()


@pytest.mark.parametrize("order", ["oldest first", "newest first"])
def test_account_reconnected_then_disconnected_again_keeps_the_alarm_open(deliver, order):
    events = [
        ("connected_account.connected", "2026-01-01T10:00:00Z"),
        ("connected_account.disconnected", "2026-01-01T10:30:00Z"),
    ]
    for event_type, at in events if order == "oldest first" else reversed(events):
        deliver(event_type, at)

    alarm = Alarm.objects.get(kind="account_disconnected", state="active")
    assert (alarm.subject, alarm.severity) == (f"seam:account:{DEVICE}", "major")
    account = Placement.objects.get(kind="seam_account")
    assert account.online is False
    assert account.details["errors"] == ["account_disconnected"]


def test_account_alarm_is_placed_in_the_accounts_building(deliver):
    site = Site.objects.create(name="Harbour House")
    Placement.objects.create(kind="seam_account", external_id=DEVICE, site=site)
    deliver("connected_account.disconnected", "2026-01-01T10:00:00Z")
    assert Alarm.objects.get().site == site


# --- access codes --------------------------------------------------------------------------------


def test_access_code_failed_to_set_then_set_clears_the_alarm(deliver):
    deliver("access_code.failed_to_set_on_device", "2026-01-01T10:00:00Z")
    alarm = Alarm.objects.get(kind="access_code_not_set")
    assert (alarm.state, alarm.subject, alarm.lock.external_id) == ("active", f"seam:access_code:{ACCESS_CODE}", DEVICE)
    code = Credential.objects.get()
    assert (code.status, code.details["errors"]) == ("failed to set on device", ["failed_to_set_on_device"])

    deliver("access_code.set_on_device", "2026-01-01T10:05:00Z")

    alarm.refresh_from_db()
    code.refresh_from_db()
    assert alarm.state == "cleared"
    assert (code.status, code.details["errors"], code.active) == ("set on device", [], True)


def test_access_code_set_before_a_late_older_failure_stays_set_without_alarm(deliver):
    deliver("access_code.set_on_device", "2026-01-01T10:05:00Z")
    deliver("access_code.failed_to_set_on_device", "2026-01-01T10:00:00Z")
    assert Credential.objects.get().status == "set on device"
    assert not Alarm.objects.filter(state__in=Alarm.OPEN_STATES).exists()


def test_access_code_lifecycle_moves_forward_in_vendor_time(deliver):
    deliver("access_code.removed_from_device", "2026-01-03T11:00:00Z")
    deliver("access_code.created", "2026-01-01T09:00:00Z")
    deliver("access_code.set_on_device", "2026-01-02T15:00:00Z")

    code = Credential.objects.get()
    assert (code.kind, code.status, code.active) == ("access_code", "removed from device", False)
    assert code.lock.external_id == DEVICE


def test_access_code_pin_is_never_stored(deliver):
    pin = "907531"
    deliver("access_code.set_on_device", "2026-01-01T10:00:00Z", code=pin)
    deliver("access_code.code_changed", "2026-01-01T10:01:00Z", **{"from": {"code": pin}, "to": {"code": pin[::-1]}})
    changed = [{"property": "code", "from": pin[::-1], "to": pin}]
    deliver("access_code.changed", "2026-01-01T10:02:00Z", changed_properties=changed)
    deliver("lock.unlocked", "2026-01-01T10:03:00Z", code=pin)

    code = Credential.objects.get()
    assert code.details["last_change"]["properties"] == ["code"]
    assert "pin_changed" in code.details
    for model in (Credential, Lock, Activity, Alarm, Placement, Resident):
        for row in model.objects.values():
            assert pin not in str(row) and pin[::-1] not in str(row), model.__name__


def test_access_code_name_becomes_its_label_and_an_older_name_does_not_undo_it(deliver):
    deliver("access_code.name_changed", "2026-01-01T10:00:00Z", to={"name": "Cleaner"})
    deliver("access_code.name_changed", "2026-01-01T09:00:00Z", to={"name": "Old name"})
    assert Credential.objects.get().label == "Cleaner"


def test_access_code_time_frame_sets_its_validity(deliver):
    deliver("access_code.time_frame_changed", "2026-01-01T10:00:00Z")
    code = Credential.objects.get()
    assert (code.valid_from.isoformat(), code.valid_until.isoformat()) == (
        "2025-01-02T15:00:00+00:00",
        "2025-01-03T14:00:00+00:00",
    )


def test_access_code_event_without_its_id_fails_visibly(deliver):
    event = deliver("access_code.created", "2026-01-01T10:00:00Z", access_code_id=None)
    assert event.status == "failed" and "access_code_id" in event.last_error


# --- devices -------------------------------------------------------------------------------------


def test_device_rename_keeps_the_newest_name_whatever_the_order(deliver):
    deliver("device.name_changed", "2026-01-01T11:00:00Z", device_name="Back Door")
    deliver("device.name_changed", "2026-01-01T10:00:00Z", device_name="Side Door")
    assert Lock.objects.get().name == "Back Door"


def test_device_removed_then_added_back_is_present_in_either_order(deliver):
    deliver("device.added", "2026-01-02T10:00:00Z")
    deliver("device.removed", "2026-01-01T10:00:00Z")
    assert Lock.objects.get().removed_at is None

    deliver("device.deleted", "2026-01-03T10:00:00Z")
    lock = Lock.objects.get()
    assert (lock.removed_at.isoformat(), lock.name) == ("2026-01-03T10:00:00+00:00", "Front Door")


def test_unmanaged_device_going_offline_raises_the_device_offline_alarm(deliver):
    deliver("device.converted_to_unmanaged", "2026-01-01T09:00:00Z")
    deliver("device.unmanaged.disconnected", "2026-01-01T10:00:00Z")
    lock = Lock.objects.get()
    assert (lock.online, lock.details["management"]["managed"]) == (False, False)
    assert Alarm.objects.get().kind == "device_offline"


@pytest.mark.parametrize(
    ("event_type", "key", "value"),
    [
        ("device.connection_became_flaky", "connection", {"flaky": True}),
        ("device.salto.privacy_mode_activated", "privacy_mode", {"active": True}),
        ("device.third_party_integration_detected", "third_party_integration", {"detected": True}),
        ("device.error.subscription_required", "subscription", {"required": True, "errors": ["subscription_required"]}),
        ("device.accessory_keypad_connected", "accessory_keypad", {"connected": True}),
    ],
)
def test_device_conditions_are_kept_on_the_lock(deliver, event_type, key, value):
    deliver(event_type, "2026-01-01T10:00:00Z")
    kept = Lock.objects.get().details[key]
    assert kept == {**value, "as_of": "2026-01-01T10:00:00+00:00"}


def test_flaky_connection_then_stabilized_newest_first_stays_stable(deliver):
    deliver("device.connection_stabilized", "2026-01-01T11:00:00Z")
    deliver("device.connection_became_flaky", "2026-01-01T10:00:00Z")
    assert Lock.objects.get().details["connection"]["flaky"] is False


def test_doorbell_ring_is_activity_at_the_door(deliver):
    deliver("device.doorbell_rang", "2026-01-01T10:00:00Z")
    activity = Activity.objects.get()
    assert (activity.action, activity.result, activity.lock.external_id) == ("doorbell", "rang", DEVICE)


def test_noise_raises_an_alarm_in_the_sensors_building_without_making_it_a_lock(deliver):
    site = Site.objects.create(name="Harbour House")
    Placement.objects.create(kind="seam_account", external_id=DEVICE, site=site)
    deliver("noise_sensor.noise_threshold_triggered", "2026-01-01T23:00:00Z")
    alarm = Alarm.objects.get()
    assert (alarm.kind, alarm.severity, alarm.state, alarm.site) == ("noise", "minor", "active", site)
    assert not Lock.objects.exists()


# --- remote actions, people, cards ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "action", "result"),
    [
        ("action_attempt.unlock_door.succeeded", "remote unlock", "succeeded"),
        ("action_attempt.unlock_door.failed", "remote unlock", "failed"),
        ("action_attempt.lock_door.succeeded", "remote lock", "succeeded"),
        ("action_attempt.lock_door.failed", "remote lock", "failed"),
    ],
)
def test_remote_lock_and_unlock_requests_are_activity_with_their_result(deliver, event_type, action, result):
    deliver(event_type, "2026-01-01T10:00:00Z")
    activity = Activity.objects.get()
    assert (activity.action, activity.result, activity.method) == (action, result, "remote")
    assert activity.lock.external_id == DEVICE
    assert Lock.objects.get().locked is None  # the lock.* event that follows says what the door did


def test_remote_action_without_a_device_is_still_recorded(deliver):
    deliver("action_attempt.unlock_door.failed", "2026-01-01T10:00:00Z", device_id=None)
    assert (Activity.objects.get().lock, Lock.objects.count()) == (None, 0)


def test_acs_user_created_then_deleted_in_either_order(deliver):
    deliver("acs_user.deleted", "2026-01-02T10:00:00Z")
    deliver("acs_user.created", "2026-01-01T10:00:00Z")
    person = Resident.objects.get()
    assert (person.vendor, person.external_id, person.status) == (
        "seam",
        "3e7b9f21-6c4d-4a8e-b5f0-1d2c3b4a5e6f",
        "deleted",
    )


def test_acs_credential_issued_then_invalidated_is_no_longer_active(deliver):
    deliver("acs_credential.issued", "2026-01-01T10:00:00Z")
    assert Credential.objects.get().active is True
    deliver("acs_credential.invalidated", "2026-01-02T10:00:00Z")
    card = Credential.objects.get()
    assert (card.kind, card.status, card.active) == ("card", "invalidated", False)


def test_acs_system_disconnect_is_a_controller_alarm_that_its_reconnect_clears(deliver):
    deliver("acs_system.disconnected", "2026-01-01T10:00:00Z")
    assert Alarm.objects.get().state == "active"
    deliver("acs_system.connected", "2026-01-01T10:20:00Z")
    alarm = Alarm.objects.get()
    assert (alarm.kind, alarm.state) == ("controller_comm_loss", "cleared")


@pytest.mark.parametrize(
    ("event_type", "changes"),
    [
        ("access_code.changed", {"changed_properties": None, "change_reason": 7}),
        ("access_code.name_changed", {"to": "Cleaner", "from": None}),
        ("access_code.time_frame_changed", {"to": {"starts_at": "tomorrow", "ends_at": None}}),
        ("access_code.failed_to_set_on_device", {"access_code_errors": "boom", "device_errors": [None, 3]}),
        ("device.name_changed", {"device_name": 42}),
        ("device.doorbell_rang", {"image_url": None, "video_url": ["x"]}),
        ("connected_account.disconnected", {"connected_account_errors": {"error_code": "x"}}),
        ("camera.activated", {"activation_reason": None}),
    ],
)
def test_odd_optional_fields_do_not_fail_the_event(deliver, event_type, changes):
    assert deliver(event_type, "2026-01-01T10:00:00Z", **changes).status == "processed"

"""Seam events become locks, activity and alarms, in vendor-time order."""

import json

import pytest

from events import processing
from events.models import Event
from portal.models import Activity, Alarm, Lock
from tests.vendors import fixture_bytes

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

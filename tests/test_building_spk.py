"""SPK sensor alarms and configuration drift."""

import json

import pytest

from events import processing
from events.models import Event
from portal.models import AccessGrant, Alarm, Lock
from tests.vendors import fixture_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def deliver(post, endpoint_for):
    endpoint = endpoint_for("spk")

    def _deliver(name: str, envelope_id: str, when: str | None = None, **detail) -> Event:
        envelope = json.loads(fixture_bytes("spk", f"{name}.json"))
        envelope["id"] = envelope_id
        envelope["detail"].update(detail)
        if when:
            envelope["time"] = when
            if "data" in envelope["detail"]:
                envelope["detail"]["data"]["timestamp"] = when
        event_id = post(endpoint, json.dumps(envelope).encode()).json()["event_id"]
        processing.process(event_id)
        return Event.objects.get(pk=event_id)

    return _deliver


def test_smoke_alarm_is_raised_with_its_own_severity_and_cleared(deliver):
    deliver("AlarmTriggered", "e1", "2026-04-30T12:00:00Z")
    alarm = Alarm.objects.get()
    assert (alarm.kind, alarm.severity, alarm.state) == ("smoke", "critical", "active")

    deliver("AlarmCleared", "e2", "2026-04-30T12:05:00Z")

    alarm.refresh_from_db()
    assert alarm.state == "cleared"


def test_alarm_cleared_before_it_was_raised_leaves_nothing_active(deliver):
    deliver("AlarmCleared", "e2", "2026-04-30T12:05:00Z")
    deliver("AlarmTriggered", "e1", "2026-04-30T12:00:00Z")
    assert not Alarm.objects.filter(state__in=Alarm.OPEN_STATES).exists()


def test_shadow_delta_raises_configuration_drift_and_an_empty_delta_clears_it(deliver):
    deliver("ShadowUpdateWithDelta", "s1", "2026-04-30T12:00:00Z")
    assert Alarm.objects.get().state == "active"
    deliver("ShadowUpdate", "s2", "2026-04-30T12:10:00Z", thingName=Alarm.objects.get().subject.split(":", 2)[2])
    assert Alarm.objects.get().state == "cleared"


def test_resident_added_grants_access_to_the_lock(deliver):
    deliver("ResidentAdded", "r1", "2026-04-30T10:00:00Z")
    grant = AccessGrant.objects.select_related("resident", "lock").get()
    assert (grant.resident.name, grant.resident.email) == ("Jane Resident", "resident@example.com")
    assert (grant.lock.vendor, grant.lock.external_id, grant.level, grant.active) == (
        "spk",
        "550e8400-e29b-41d4-a716-446655440000",
        "USER",
        True,
    )


def test_removal_that_arrives_before_the_grant_leaves_no_access(deliver):
    deliver("ResidentRemoved", "r2", "2026-04-30T11:00:00Z")
    deliver("ResidentAdded", "r1", "2026-04-30T10:00:00Z")
    assert AccessGrant.objects.get().active is False


def test_accessible_lock_added_names_the_lock_and_the_level(deliver):
    deliver("AccessibleLockAdded", "a1")
    grant = AccessGrant.objects.select_related("lock").get()
    assert (grant.lock.name, grant.level, grant.active) == ("Front Door", "USER", True)
    assert grant.granted_by == "1c1c1c1c-1c1c-1c1c-1c1c-1c1c1c1c1c1c"


def test_lock_created_keeps_the_vendor_identifiers(deliver):
    deliver("LockCreated", "l1", "2026-04-30T10:00:00Z")
    lock = Lock.objects.get()
    assert lock.details["lockId"] == 4321 and lock.details["serialNumber"] == "SPK-1234"

"""SPK sensor alarms and configuration drift."""

import json

import pytest

from events import processing
from events.models import Event
from portal.models import Alarm
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

"""PDK events become doors, activity and alarms: once per event, in vendor-time order."""

import json

import pytest

from events import processing
from events.models import Event
from portal.models import Activity, Alarm, Lock, Placement
from tests.vendors import fixture_bytes, fixture_files, with_changes

pytestmark = pytest.mark.django_db


@pytest.fixture
def deliver(post, endpoint_for):
    """Post a PDK payload through the ingress and process it as a worker would."""
    endpoint = endpoint_for("pdk")

    def _deliver(body: bytes) -> Event:
        event_id = post(endpoint, body).json()["event_id"]
        processing.process(event_id)
        return Event.objects.get(pk=event_id)

    return _deliver


def sample(topic: str, occurred: int | None = None, **changes) -> bytes:
    body = fixture_bytes("pdk", f"{topic}.json")
    if occurred is not None:
        payload = json.loads(body)
        payload["metadata"]["occurred"] = occurred
        body = json.dumps(payload).encode()
    return with_changes(body, **changes) if changes else body


def model_state():
    return {
        "locks": sorted(Lock.objects.values_list("external_id", "name", "door_open", "last_activity_at")),
        "activity": Activity.objects.count(),
        "alarms": sorted(Alarm.objects.values_list("kind", "subject", "state", "occurrences")),
        "placements": sorted(Placement.objects.values_list("kind", "external_id", "online")),
    }


def test_door_request_records_the_door_and_the_attempt(deliver):
    event = deliver(sample("door.request.allowed"))

    assert event.status == "processed"
    door = Lock.objects.get()
    assert (door.vendor, door.external_id, door.name) == ("pdk", "1070000:1", "Door Name")
    assert door.placement.kind == "pdk_panel" and door.placement.external_id == "1070000"
    activity = Activity.objects.get()
    assert (activity.lock, activity.action, activity.result) == (door, "request", "allowed")
    assert (activity.actor, activity.method) == ("PDK person 1", "CARD_OR_PIN")
    assert activity.occurred_at == event.occurred_at == door.last_activity_at


def test_forced_door_raises_a_critical_alarm_that_its_clear_event_clears(deliver):
    deliver(sample("door.alarm.forced", occurred=1_700_000_000_000))
    alarm = Alarm.objects.get()
    assert (alarm.kind, alarm.severity, alarm.state, alarm.occurrences) == ("door_forced", "critical", "active", 1)

    deliver(sample("door.alarm.forced.cleared", occurred=1_700_000_060_000))

    alarm.refresh_from_db()
    assert alarm.state == "cleared" and alarm.cleared_by.event_type == "door.alarm.forced.cleared"


def test_clear_that_arrives_before_its_raise_leaves_no_active_alarm(deliver):
    deliver(sample("door.alarm.forced.cleared", occurred=1_700_000_060_000))
    deliver(sample("door.alarm.forced", occurred=1_700_000_000_000))

    assert not Alarm.objects.filter(state__in=Alarm.OPEN_STATES).exists()
    assert Alarm.objects.get().occurrences == 1


def test_a_raise_after_the_clear_opens_a_new_alarm(deliver):
    deliver(sample("door.alarm.propped.on", occurred=1_700_000_000_000))
    deliver(sample("door.alarm.propped.off", occurred=1_700_000_010_000))
    deliver(sample("door.alarm.propped.on", occurred=1_700_000_020_000))

    assert sorted(Alarm.objects.values_list("state", flat=True)) == ["active", "cleared"]


def test_repeats_while_open_count_occurrences(deliver):
    for second in range(5):
        deliver(sample("door.alarm.propped.on", occurred=1_700_000_000_000 + second * 1000))

    alarm = Alarm.objects.get()
    assert (alarm.state, alarm.occurrences, alarm.severity) == ("active", 5, "major")


def test_older_door_position_never_overwrites_a_newer_one(deliver):
    deliver(sample("door.input.dps.opened", occurred=1_700_000_010_000))
    deliver(sample("door.input.dps.closed", occurred=1_700_000_000_000))

    assert Lock.objects.get().door_open is True


def test_panel_offline_alarm_follows_connection_events(deliver):
    deliver(sample("panel.disconnected", timestamp="2026-01-01T10:00:00Z"))
    assert Alarm.objects.get().state == "active"
    assert Placement.objects.get().online is False

    deliver(sample("panel.connected", timestamp="2026-01-01T10:05:00Z"))

    assert Alarm.objects.get().state == "cleared"
    assert Placement.objects.get().online is True


def test_duress_raises_a_critical_alarm_besides_the_activity(deliver):
    deliver(sample("door.request.duress"))
    assert Activity.objects.get().result == "duress"
    assert Alarm.objects.get().kind == "duress"


def test_every_sample_processed_twice_leaves_the_same_model(deliver):
    for path in fixture_files("pdk"):
        deliver(path.read_bytes())
    once = model_state()

    processing.replay(Event.objects.all())
    for event_id in Event.objects.values_list("pk", flat=True):
        processing.process(event_id)

    assert model_state() == once
    assert once["activity"] > 0 and once["alarms"]
    assert not Event.objects.filter(status="failed").exists()


@pytest.mark.parametrize("model", ["placement", "lock", "activity", "alarm"])
def test_building_model_lists_and_pages_render(admin_client, deliver, model):
    from django.urls import reverse

    for topic in ("door.request.allowed", "door.alarm.forced", "panel.disconnected"):
        deliver(sample(topic))
    assert admin_client.get(reverse(f"admin:portal_{model}_changelist")).status_code == 200
    obj = {"placement": Placement, "lock": Lock, "activity": Activity, "alarm": Alarm}[model].objects.first()
    assert admin_client.get(reverse(f"admin:portal_{model}_change", args=[obj.pk])).status_code == 200


def test_placing_a_panel_rehomes_its_doors(admin_client, deliver):
    from django.urls import reverse

    from portal.models import Site

    deliver(sample("door.request.allowed"))
    site = Site.objects.create(name="Harbour View", timezone="Europe/Paris")
    panel = Placement.objects.get()

    admin_client.post(reverse("admin:portal_placement_change", args=[panel.pk]), {"name": "", "site": site.pk})

    assert Lock.objects.get().site == site


@pytest.mark.django_db(transaction=True)
def test_events_for_one_door_processed_by_two_workers_at_once_serialize(post, endpoint_for):
    import threading

    from django.db import connection

    endpoint = endpoint_for("pdk")
    ids = [
        post(endpoint, sample("door.alarm.propped.on", occurred=1_700_000_000_000 + i * 1000)).json()["event_id"]
        for i in range(8)
    ]
    barrier = threading.Barrier(len(ids))
    errors = []

    def work(event_id):
        barrier.wait()
        try:
            processing.process(event_id)
        except Exception as exc:  # collected: a worker must not fail on a race
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(event_id,)) for event_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert set(Event.objects.values_list("status", flat=True)) == {"processed"}
    alarm = Alarm.objects.get()
    assert (alarm.state, alarm.occurrences) == ("active", 8)
    assert Lock.objects.count() == 1

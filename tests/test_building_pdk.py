"""PDK events become doors, activity and alarms: once per event, in vendor-time order."""

import json

import pytest
from django.forms.models import model_to_dict

from events import processing
from events.models import Event
from portal import domain
from portal.models import Activity, Alarm, Intercom, Lock, Placement, Resident
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


def edited(topic: str, occurred: int | None = None, body: dict | None = None, **changes) -> bytes:
    """A documented sample with its time, some body fields or top-level fields changed."""
    payload = json.loads(fixture_bytes("pdk", f"{topic}.json"))
    if occurred is not None:
        payload.setdefault("metadata", {})["occurred"] = occurred
    payload["body"] = {**payload.get("body", {}), **(body or {})} if body is not None else payload.get("body")
    if payload["body"] is None:
        del payload["body"]
    payload.update(changes)
    return json.dumps(payload).encode()


T0 = 1_700_000_000_000


def model_state():
    return {
        "locks": sorted(
            Lock.objects.values_list(
                "external_id", "name", "door_open", "locked", "removed_at", "last_activity_at", "details"
            )
        ),
        "activity": sorted(
            Activity.objects.values_list("event_id", "lock__external_id", "action", "resident__external_id")
        ),
        "alarms": sorted(Alarm.objects.values_list("kind", "subject", "state", "occurrences")),
        "placements": sorted(
            Placement.objects.values_list("kind", "external_id", "name", "online", "status", "details")
        ),
        "residents": sorted(
            Resident.objects.values_list("external_id", "status", "active_from", "expires_at", "details")
        ),
        "intercoms": sorted(Intercom.objects.values_list("external_id", "name", "manufacturer", "status")),
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
    assert once["activity"] and once["alarms"] and once["residents"] and once["intercoms"]
    assert {kind for kind, *_ in once["placements"]} == {"pdk_panel", "pdk_org"}
    assert set(Event.objects.values_list("status", flat=True)) == {"processed"}


@pytest.mark.parametrize("model", ["placement", "panel", "lock", "activity", "alarm", "resident", "intercom"])
def test_building_model_lists_and_pages_render(admin_client, deliver, model):
    from django.urls import reverse

    from portal.models import Panel

    for topic in (
        "door.request.allowed",
        "door.alarm.forced",
        "panel.disconnected",
        "endpoint.input.pi.status",
        "notification.device.updated",
        "notification.intercom.created",
        "entity.modified",
    ):
        deliver(sample(topic))
    assert admin_client.get(reverse(f"admin:portal_{model}_changelist")).status_code == 200
    models = {
        "placement": Placement,
        "panel": Panel,
        "lock": Lock,
        "activity": Activity,
        "alarm": Alarm,
        "resident": Resident,
        "intercom": Intercom,
    }
    obj = models[model].objects.first()
    assert admin_client.get(reverse(f"admin:portal_{model}_change", args=[obj.pk])).status_code == 200


def test_placing_a_panel_rehomes_its_doors(admin_client, deliver):
    from django.urls import reverse

    from portal.models import Site

    deliver(sample("door.request.allowed"))
    site = Site.objects.create(name="Harbour View", timezone="Europe/Paris")
    panel = Placement.objects.get()

    admin_client.post(reverse("admin:portal_placement_change", args=[panel.pk]), {"name": "", "site": site.pk})

    assert Lock.objects.get().site == site


def process_all_at_once(event_ids) -> list[Exception]:
    """Each event processed by its own worker (a thread with its own connection), all released at
    once; what they raised."""
    import threading

    from django.db import connection

    barrier = threading.Barrier(len(event_ids))
    errors = []

    def work(event_id):
        barrier.wait()
        try:
            processing.process(event_id)
        except Exception as exc:  # collected: a worker must not fail on a race
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(event_id,)) for event_id in event_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.mark.django_db(transaction=True)
def test_events_for_one_door_processed_by_two_workers_at_once_serialize(post, endpoint_for):
    endpoint = endpoint_for("pdk")
    ids = [
        post(endpoint, sample("door.alarm.propped.on", occurred=1_700_000_000_000 + i * 1000)).json()["event_id"]
        for i in range(8)
    ]
    errors = process_all_at_once(ids)
    assert errors == []
    assert set(Event.objects.values_list("status", flat=True)) == {"processed"}
    alarm = Alarm.objects.get()
    assert (alarm.state, alarm.occurrences) == ("active", 8)
    assert Lock.objects.count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("door", ["new", "known"])
def test_door_alarms_from_many_workers_at_once_open_one_alarm_without_a_second_pass(
    post, endpoint_for, monkeypatch, door
):
    """The door's row lock orders the raises: none meets another's new alarm on insert (that would
    fail the optimistic pass and run the batch again, one savepoint per event)."""
    endpoint = endpoint_for("pdk")
    if door == "known":
        processing.process(post(endpoint, sample("door.request.allowed", occurred=T0 - 1000)).json()["event_id"])
    times = [T0 + i * 1000 for i in (3, 0, 5, 1, 6, 2, 4)]

    def name(t: int) -> str:  # a new door is named differently by each event; a known one keeps its name
        return f"Door {t}" if door == "new" else "Door Name"

    bodies = [edited("door.alarm.forced", metadata={"occurred": t, "doorName": name(t)}) for t in times]
    bodies.append(edited("door.alarm.forced.cleared", metadata={"occurred": T0 + 3500, "doorName": name(T0 + 3500)}))
    ids = [post(endpoint, body).json()["event_id"] for body in bodies]
    passes, process_batch = [], processing._process_batch

    def counted_pass(event_ids, *, isolate):
        passes.append(isolate)
        return process_batch(event_ids, isolate=isolate)

    monkeypatch.setattr(processing, "_process_batch", counted_pass)
    errors = process_all_at_once(ids)
    assert errors == [] and passes == [False] * len(ids)
    assert set(Event.objects.values_list("status", flat=True)) == {"processed"}
    found = Lock.objects.get()
    assert (found.name, found.details["name_reported"]["name"]) == (name(max(times)), name(max(times)))
    # Whatever the order, every raise counted once and at most one alarm left open.
    assert sum(Alarm.objects.values_list("occurrences", flat=True)) == len(times)
    assert Alarm.objects.filter(state__in=Alarm.OPEN_STATES).count() <= 1


# --- doors: inputs, relay, modes, app commands ------------------------------------------------


def test_door_request_links_the_pdk_person_as_the_resident(deliver):
    deliver(sample("door.request.allowed"))

    activity = Activity.objects.get()
    assert (activity.resident.vendor, activity.resident.external_id) == ("pdk", "1070000:1")


def test_person_ids_count_per_panel(deliver):
    deliver(sample("door.request.allowed"))
    deliver(sample("door.request.denied", panelId="2080000"))

    assert sorted(Resident.objects.values_list("external_id", flat=True)) == ["1070000:1", "2080000:1"]


def test_relay_on_unlocks_and_relay_off_locks_the_door(deliver):
    deliver(sample("door.input.relay.on", occurred=T0))
    door = Lock.objects.get()
    assert (door.locked, door.locked_as_of) == (False, Event.objects.get().occurred_at)

    deliver(sample("door.input.relay.off", occurred=T0 + 5000))

    door.refresh_from_db()
    assert door.locked is True
    assert sorted(Activity.objects.values_list("action", "method")) == [("lock", "relay"), ("unlock", "relay")]


def test_an_older_relay_event_never_moves_the_lock_state_back(deliver):
    deliver(sample("door.input.relay.off", occurred=T0 + 5000))
    deliver(sample("door.input.relay.on", occurred=T0))

    assert Lock.objects.get().locked is True
    assert Activity.objects.count() == 2


@pytest.mark.parametrize("order", [("on", "off"), ("off", "on")])
def test_relay_on_and_off_in_the_same_millisecond_end_locked_in_any_order(deliver, order):
    for state in order:
        deliver(sample(f"door.input.relay.{state}", occurred=T0))

    assert Lock.objects.get().locked is True


@pytest.mark.parametrize(
    ("topic", "action"),
    [
        ("door.input.rex.on", "exit button pressed"),
        ("door.input.rex.off", "exit button released"),
        ("door.forceopen.on", "force open on"),
        ("door.forceclose.off", "force close off"),
        ("door.autoopen.on", "auto open on"),
        ("door.autoopen.override.off", "auto open override off"),
    ],
)
def test_door_actions_are_door_activity(deliver, topic, action):
    event = deliver(sample(topic))

    activity = Activity.objects.get()
    assert (activity.lock.external_id, activity.action, activity.occurred_at) == (
        "1070000:1",
        action,
        event.occurred_at,
    )
    assert activity.lock.last_activity_at == event.occurred_at


def test_door_mode_is_kept_on_the_door_and_moves_forward_only(deliver):
    deliver(sample("door.forceopen.on", occurred=T0 + 60_000))
    deliver(sample("door.forceopen.off", occurred=T0))
    deliver(sample("door.autoopen.on", occurred=T0))

    modes = Lock.objects.get().details["modes"]
    assert modes["force_open"]["on"] is True
    assert (modes["auto_open"]["on"], modes["auto_open"]["ruleId"], modes["auto_open"]["ruleName"]) == (
        True,
        1,
        "Rule Name",
    )
    assert Activity.objects.count() == 3


def test_virtual_read_is_activity_by_the_person(deliver):
    deliver(sample("door.input.virtualread"))

    activity = Activity.objects.get()
    assert (activity.action, activity.actor, activity.resident.external_id) == (
        "virtual read",
        "PDK person 1",
        "1070000:1",
    )


def test_app_command_is_activity_on_the_commanded_door_by_the_app_user(deliver):
    deliver(sample("notification.client.command"))

    activity = Activity.objects.get()
    assert (activity.lock.external_id, activity.lock.name) == ("1070000:1", "Door Name")
    assert (activity.action, activity.method, activity.actor) == ("app command", "door.input.virtualread", "PDK user 1")
    assert activity.resident.external_id == "1070000:1"


def test_app_command_that_names_no_door_changes_nothing(deliver):
    event = deliver(edited("notification.client.command", body={"details": {}}))

    assert event.status == "processed"
    assert not Activity.objects.exists() and not Lock.objects.exists()


def test_elevator_floor_group_activation_is_activity_on_its_reader(deliver):
    deliver(sample("floorgroup.activated"))

    activity = Activity.objects.get()
    assert (activity.lock.external_id, activity.action, activity.details) == (
        "1070000:1",
        "floor group activated",
        {"elevatorId": 1},
    )


DOOR_HISTORY = [
    "notification.device.created",
    "door.request.allowed",
    "door.input.relay.on",
    "door.input.dps.opened",
    "door.forceopen.on",
    "door.input.dps.closed",
    "door.input.relay.off",
    "notification.device.updated",
    "door.forceopen.off",
    "door.request.denied",
    "notification.device.deleted",
]


def test_a_doors_events_newest_first_end_in_the_same_state_as_oldest_first(deliver):
    timeline = [(topic, T0 + i * 1000) for i, topic in enumerate(DOOR_HISTORY)]
    for panel, events in (("1", timeline), ("2", timeline[::-1])):
        for topic, occurred in events:
            deliver(edited(topic, occurred=occurred, panelId=panel, id=f"{panel}-{topic}"))

    def state(panel):
        door = Lock.objects.get(external_id=f"{panel}:1")
        return (door.name, door.locked, door.door_open, door.removed_at, door.last_activity_at, door.details)

    assert state("1") == state("2")
    name, locked, door_open, removed_at, *_ = state("1")
    assert (name, locked, door_open) == ("1111111111111111111111111111111111111", True, False)  # as deleted
    assert removed_at is not None


# --- a door seen for the first time --------------------------------------------------------------


FIRST_SIGHTINGS = {
    "forced": edited("door.alarm.forced", occurred=T0),
    "propped": edited("door.alarm.propped.on", occurred=T0),
    "request": edited("door.request.allowed", occurred=T0),
    "unnamed": edited("door.alarm.forced", metadata={"occurred": T0, "doorName": ""}),
    "device created": edited("notification.device.created", occurred=T0),  # names the door itself
}


@pytest.mark.parametrize("sighting", FIRST_SIGHTINGS)
def test_a_door_seen_first_is_created_as_rename_would_have_left_it(deliver, monkeypatch, sighting):
    """Created with the event's name and its as-of, not created unnamed and renamed: the same row."""
    body = json.loads(FIRST_SIGHTINGS[sighting])
    renames, rename, lock = [], domain.rename, domain.lock

    def counted_rename(*args):
        renames.append(args)
        return rename(*args)

    def lock_as_before(*args, reported_name=None, **kwargs):
        return lock(*args, **kwargs)

    monkeypatch.setattr(domain, "rename", counted_rename)
    deliver(json.dumps({**body, "panelId": "new"}).encode())
    assert len(renames) == (1 if sighting == "device created" else 0)  # a device event is always weighed

    renames.clear()
    monkeypatch.setattr(domain, "lock", lock_as_before)  # the way it was: created unnamed, then renamed
    deliver(json.dumps({**body, "panelId": "old"}).encode())
    assert len(renames) == (0 if sighting == "unnamed" else 1)

    new, old = (Lock.objects.get(placement__external_id=panel) for panel in ("new", "old"))
    assert (new.name, new.details) == (old.name, old.details)
    differ = ["id", "external_id", "placement"]
    assert model_to_dict(new, exclude=differ) == model_to_dict(old, exclude=differ)
    if sighting == "unnamed":
        assert (new.name, new.details) == ("", {})
    else:
        name = body["body"]["name"] if sighting == "device created" else body["metadata"]["doorName"]
        as_of = Event.objects.get(payload__panelId="new").occurred_at.isoformat()
        assert (new.name, new.details["name_reported"]) == (name, {"name": name, "as_of": as_of})


def test_a_door_created_named_by_a_late_event_is_still_renamed_by_a_newer_one(deliver):
    deliver(edited("door.alarm.forced", metadata={"occurred": T0 + 60_000, "doorName": "Newer"}))
    deliver(edited("door.alarm.forced.cleared", metadata={"occurred": T0 + 90_000, "doorName": "Newest"}))
    deliver(edited("door.alarm.propped.on", metadata={"occurred": T0, "doorName": "Older"}))  # late: no rename

    door = Lock.objects.get()
    assert (door.name, door.details["name_reported"]["name"]) == ("Newest", "Newest")


# --- devices and intercoms -----------------------------------------------------------------------


def test_device_rename_renames_the_door_and_an_older_door_event_does_not_undo_it(deliver):
    deliver(sample("door.request.allowed", occurred=T0))
    assert Lock.objects.get().name == "Door Name"

    deliver(edited("notification.device.updated", occurred=T0 + 60_000))
    deliver(sample("door.request.denied", occurred=T0 + 30_000))

    door = Lock.objects.get()
    assert (door.external_id, door.name) == ("1070000:1", "New Name")
    assert Activity.objects.count() == 2


def test_device_configuration_is_kept_on_the_door_newest_first(deliver):
    deliver(edited("notification.device.updated", occurred=T0 + 60_000))
    deliver(edited("notification.device.created", occurred=T0))

    door = Lock.objects.get()
    device = door.details["device"]
    # The update is newer: its values win; the older creation only fills what the update left out.
    assert (device["dps"], device["rex"], device["propAlarm"], device["forcedAlarm"]) == (True, True, True, True)
    assert (device["publicIcon"], device["type"], device["readerType"]) == ("swingingGate", "primaryReader", "standard")
    assert door.name == "New Name" and door.removed_at is None


def test_deleted_device_marks_the_door_removed_until_it_is_created_again(deliver):
    deliver(edited("notification.device.created", occurred=T0))
    deleted = deliver(edited("notification.device.deleted", occurred=T0 + 1000))
    assert Lock.objects.get().removed_at == deleted.occurred_at

    deliver(edited("notification.device.created", occurred=T0 + 2000))
    assert Lock.objects.get().removed_at is None

    deliver(edited("notification.device.deleted", occurred=T0 + 1500))  # late, older than the re-creation
    assert Lock.objects.get().removed_at is None


def test_device_created_and_deleted_in_the_same_millisecond_ends_removed(deliver):
    deliver(edited("notification.device.deleted", occurred=T0))
    deliver(edited("notification.device.created", occurred=T0))

    assert Lock.objects.get().removed_at is not None


def test_intercom_is_created_renamed_and_deleted(deliver):
    deliver(edited("notification.intercom.created", occurred=T0))
    intercom = Intercom.objects.get()
    assert (intercom.vendor, intercom.external_id, intercom.name, intercom.manufacturer, intercom.status) == (
        "pdk",
        "11111111111111111111111111111111",
        "Name",
        "comelit",
        "registered",
    )
    assert intercom.placement == Placement.objects.get(kind="pdk_panel", external_id="1070000")

    deliver(edited("notification.intercom.deleted", occurred=T0 + 2000))
    deliver(edited("notification.intercom.updated", occurred=T0 + 1000))

    intercom.refresh_from_db()
    assert (intercom.name, intercom.status) == ("Name", "deleted")  # deleted under its old name, newest


# --- controllers and power -----------------------------------------------------------------------


def test_power_readings_are_kept_per_controller_and_never_go_backwards(deliver):
    newer = deliver(edited("endpoint.input.pi.status", occurred=T0 + 60_000, body={"voltage": 12000}))
    deliver(edited("endpoint.input.pi.status", occurred=T0, body={"voltage": 9000, "inputPowerOn": False}))
    deliver(edited("endpoint.input.pi.status", occurred=T0 + 1, body={"address": "17", "voltage": 11000}))

    controllers = Placement.objects.get().details["controllers"]
    reading = controllers["1:"]["input_power"]
    assert (reading["voltage"], reading["current"], reading["inputPowerOn"]) == (12000, 150, True)
    assert reading["as_of"] == newer.occurred_at.isoformat()
    assert controllers["1:17"]["input_power"]["voltage"] == 11000


def test_battery_and_peripheral_power_readings_sit_beside_input_power(deliver):
    for topic in ("endpoint.input.pi.status", "endpoint.input.pb.status", "endpoint.input.pp.status"):
        deliver(sample(topic))
    deliver(sample("endpoint.input.bh.state"))

    controller = Placement.objects.get().details["controllers"]["1:"]
    assert controller["battery"]["chargeCategory"] == "N"
    assert controller["peripheral_power"]["voltage"] == 13056
    assert controller["battery_health"]["state"] == "U"
    assert controller["input_power"]["voltage"] == 10880


def test_endpoints_added_and_deleted_are_kept_on_the_panel(deliver):
    deliver(edited("endpoint.added", occurred=T0))
    endpoints = Placement.objects.get().details["endpoints"]
    assert endpoints["1::1"] | {"as_of": None} == {
        "present": True,
        "type": "primaryReader",
        "port": 1,
        "ioLinkName": "Test Connection",
        "as_of": None,
    }

    deliver(edited("endpoint.deleted", occurred=T0 + 1000))
    deliver(edited("endpoint.added", occurred=T0 + 500))  # late and older: the deletion stands

    assert Placement.objects.get().details["endpoints"]["1::1"]["present"] is False


# --- people --------------------------------------------------------------------------------------


def test_person_created_is_an_active_resident_of_the_panel(deliver):
    deliver(sample("notification.person.created"))

    person = Resident.objects.get()
    assert (person.vendor, person.external_id, person.status, person.details["partition"]) == (
        "pdk",
        "1070000:1",
        "active",
        0,
    )


def test_person_events_out_of_order_end_in_the_newest_state(deliver):
    deleted = deliver(edited("notification.person.deleted", occurred=T0 + 2000))
    deliver(edited("notification.person.updated", occurred=T0 + 1000))
    deliver(edited("notification.person.created", occurred=T0))

    person = Resident.objects.get()
    assert (person.status, person.status_as_of) == ("deleted", deleted.occurred_at)


def test_person_update_applies_the_new_state(deliver):
    deliver(edited("notification.person.created", occurred=T0 + 1000, body={"enabled": False, "partition": 3}))
    updated_state = {
        "enabled": True,
        "partition": 2,
        "activeDate": "2026-03-01T08:00:00Z",
        "expireDate": "YYYY-MM-DDThh:mm:ss",
    }
    deliver(edited("notification.person.updated", occurred=T0 + 2000, body={"newState": updated_state}))
    deliver(edited("notification.person.created", occurred=T0))  # older: changes nothing

    person = Resident.objects.get()
    assert (person.status, person.details["partition"]) == ("active", 2)
    assert person.active_from.isoformat() == "2026-03-01T08:00:00+00:00"
    assert person.expires_at is None  # the documented placeholder is an unknown date, not an error


def test_person_with_placeholder_dates_is_processed(deliver):
    event = deliver(sample("notification.person.updated"))

    assert event.status == "processed"
    person = Resident.objects.get()
    assert (person.status, person.active_from, person.expires_at) == ("active", None, None)


def test_entity_events_add_a_person_track_groups_and_remove_it(deliver):
    deliver(sample("entity.added"))
    assert Resident.objects.get().external_id == "1070000:1"

    deliver(edited("entity.modified", occurred=T0 + 2000))
    removal = {"action": "person.modified.group.removed"}
    deliver(edited("entity.modified", occurred=T0 + 1000, body=removal))  # older: stays a member
    group = Resident.objects.get().details["groups"]["1"]
    assert (group["member"], group["name"]) == (True, "Group Name")

    deliver(edited("entity.modified", occurred=T0 + 3000, body=removal))
    assert Resident.objects.get().details["groups"]["1"]["member"] is False

    deliver(sample("entity.removed"))
    assert Resident.objects.get().status == "deleted"


def test_entity_events_about_other_entities_change_nothing(deliver):
    event = deliver(edited("entity.added", body={"details": {"groupId": 4, "entityType": "GROUP"}}))

    assert event.status == "processed"
    assert not Resident.objects.exists()


# --- panels, organization, permissions -----------------------------------------------------------


def test_panel_registration_names_the_panel_and_its_deletion_clears_its_offline_alarm(deliver):
    deliver(sample("panel.disconnected", timestamp="2026-01-01T10:00:00Z"))
    deliver(sample("panel.created"))

    panel = Placement.objects.get(kind="pdk_panel")
    assert (panel.external_id, panel.name, panel.status) == ("1070000", "Panel Name", "registered")
    assert panel.details["registration"]["ou"] == "57e50e4840ce4f00017df412"

    deliver(sample("panel.deleted"))

    panel.refresh_from_db()
    assert panel.status == "deleted"
    assert Alarm.objects.get(kind="panel_offline").state == "cleared"


def test_panel_update_renames_the_panel(deliver):
    deliver(sample("panel.created"))
    deliver(sample("panel.updated", name="Lobby node"))

    panel = Placement.objects.get()
    assert (panel.name, panel.status) == ("Lobby node", "registered")


def test_organization_events_keep_the_organization(deliver):
    deliver(sample("ou.created"))
    org = Placement.objects.get(kind="pdk_org")
    assert (org.external_id, org.name, org.status) == ("6231d2e96348ca00019f7474", "Name", "registered")
    assert org.details["settings"]["parent"] == "57e50e4840ce4f00017df412"

    deliver(sample("ou.updated", name="Harbour View HOA"))
    deliver(sample("ou.deleted", name="Harbour View HOA"))

    org.refresh_from_db()
    assert (org.name, org.status, org.details["settings"]["useTouchMobileApp"]) == ("Harbour View HOA", "deleted", True)


@pytest.mark.parametrize("change", ["created", "accepted", "updated", "deleted"])
def test_permission_events_are_deliberately_ignored(deliver, change):
    event = deliver(sample(f"permission.{change}"))

    assert event.status == "processed"
    assert not (Placement.objects.exists() or Resident.objects.exists())


# --- odd payloads --------------------------------------------------------------------------------


PANEL_EVENT_FILES = [path for path in fixture_files("pdk") if "body" in json.loads(path.read_bytes())]


@pytest.mark.parametrize("path", PANEL_EVENT_FILES, ids=lambda path: path.stem)
@pytest.mark.parametrize("odd", [{}, "x"], ids=["empty", "text"])
def test_an_odd_body_is_processed_or_fails_saying_what_is_missing(deliver, path, odd):
    payload = json.loads(path.read_bytes())
    payload["body"] = odd

    event = deliver(json.dumps(payload).encode())

    assert event.status in ("processed", "failed")
    if event.status == "failed":
        assert event.last_error.startswith("ValueError: the body has no usable"), event.last_error


@pytest.mark.parametrize("topic", ["panel.created", "ou.updated", "notification.person.created"])
def test_an_event_without_its_id_fails_saying_so(deliver, topic):
    payload = json.loads(fixture_bytes("pdk", f"{topic}.json"))
    (payload.get("body") or payload).pop("id")

    event = deliver(json.dumps(payload).encode())

    assert event.status == "failed" and "'id'" in event.last_error

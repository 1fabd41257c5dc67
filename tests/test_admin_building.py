"""The building model in the admin: lists that stay cheap, the lock and resident pages, alarm actions."""

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from events import processing
from events.models import Event
from portal import domain
from portal.models import Activity, Alarm, Credential, Lock, Placement, Resident, Site

pytestmark = pytest.mark.django_db

BUILDING_MODELS = [
    "site",
    "placement",
    "panel",
    "hub",
    "lock",
    "activity",
    "alarm",
    "resident",
    "accessgrant",
    "credential",
    "camera",
    "intercom",
]


@pytest.fixture
def demo_building():
    """Every vendor sample posted through the real ingress (load_demo) and processed."""
    call_command("load_demo", stdout=open("/dev/null", "w"))  # noqa: SIM115
    for event_id in Event.objects.values_list("pk", flat=True):
        processing.process(event_id)
    return Site.objects.get(name="Demo building")


def changelist(name: str) -> str:
    return reverse(f"admin:portal_{name}_changelist")


@pytest.mark.parametrize("name", BUILDING_MODELS)
def test_every_building_list_and_its_first_page_render(admin_client, demo_building, name):
    response = admin_client.get(changelist(name))
    assert response.status_code == 200
    first = response.context["cl"].result_list[:1]
    for obj in first:
        assert admin_client.get(reverse(f"admin:portal_{name}_change", args=[obj.pk])).status_code == 200


@pytest.mark.parametrize("name", ["lock", "activity", "alarm", "resident", "accessgrant", "credential"])
def test_list_queries_do_not_grow_with_rows(admin_client, demo_building, name):
    with CaptureQueriesContext(connection) as few:
        admin_client.get(changelist(name) + "?p=0")
    call_command("load_demo", stdout=open("/dev/null", "w"))  # noqa: SIM115 (a second building's worth)
    for event_id in Event.objects.filter(status="pending").values_list("pk", flat=True):
        processing.process(event_id)
    with CaptureQueriesContext(connection) as many:
        admin_client.get(changelist(name))
    assert len(many) <= len(few) + 1  # +1: a second site in the site filter's choices is not a per-row query


def test_lock_page_shows_its_recent_activity_and_alarms(admin_client, demo_building):
    door = Lock.objects.filter(vendor="pdk", activity__isnull=False, alarms__isnull=False).distinct().first()
    page = admin_client.get(reverse("admin:portal_lock_change", args=[door.pk])).content.decode()
    activity = door.activity.first()
    assert activity.action in page and f"{activity.occurred_at:%Y-%m-%d %H:%M:%S}" in page
    assert door.alarms.first().kind in page
    assert f"?lock__id__exact={door.pk}" in page  # links to everything that happened here


def test_resident_page_shows_their_access_and_keys(admin_client, demo_building):
    person = Resident.objects.filter(grants__isnull=False).first()
    page = admin_client.get(reverse("admin:portal_resident_change", args=[person.pk])).content.decode()
    for grant in person.grants.select_related("lock"):
        assert str(grant.lock) in page and grant.level in page
    for credential in person.credentials.all():
        assert (credential.label or credential.external_id) in page


@pytest.mark.parametrize(
    ("name", "search", "expected"),
    [
        ("resident", "@", lambda: Resident.objects.exclude(email="").first()),
        ("lock", "Door", lambda: Lock.objects.filter(name__icontains="door").first()),
    ],
)
def test_search_finds_people_and_doors(admin_client, demo_building, name, search, expected):
    wanted = expected()
    assert wanted is not None
    response = admin_client.get(changelist(name), {"q": search})
    assert wanted in response.context["cl"].result_list


def test_lock_search_finds_a_serial_number(admin_client):
    lock = Lock.objects.create(vendor="spk", external_id="uuid-1", name="Unit 4B", details={"serialNumber": "SN-778"})
    response = admin_client.get(changelist("lock"), {"q": "SN-778"})
    assert list(response.context["cl"].result_list) == [lock]


def open_alarm(kind="door_forced", subject="pdk:door:1070000:1", event=None) -> Alarm:
    event = event or Event.objects.create(
        source="pdk",
        event_type="door.alarm.forced",
        dedup_key=f"k-{subject}",
        received_at="2026-11-01T10:00Z",
        payload={},
    )
    return domain.raise_alarm(kind, subject, event, event.received_at)


def act_on(admin_client, action: str, alarms: list[Alarm], **extra):
    data = {"action": action, "_selected_action": [a.pk for a in alarms], **extra}
    return admin_client.post(changelist("alarm"), data, follow="apply" in extra)


def test_acknowledging_asks_for_a_note_first(admin_client):
    alarm = open_alarm()
    response = act_on(admin_client, "acknowledge", [alarm])
    assert response.status_code == 200
    assert b'name="note"' in response.content
    alarm.refresh_from_db()
    assert alarm.state == "active"  # nothing changes before the note is given


def test_acknowledging_with_a_note_records_who_when_and_what(admin_client, admin_user):
    alarm = open_alarm()
    act_on(admin_client, "acknowledge", [alarm], apply="Acknowledge", note="Guard sent to the door")
    alarm.refresh_from_db()
    assert (alarm.state, alarm.acknowledged_by) == ("acknowledged", admin_user)
    assert alarm.acknowledged_at is not None
    assert "Guard sent to the door" in alarm.note and str(admin_user) in alarm.note


def test_an_empty_note_is_a_form_error(admin_client):
    alarm = open_alarm()
    response = act_on(admin_client, "acknowledge", [alarm], apply="Acknowledge", note="  ")
    assert response.context["form"].errors["note"]
    alarm.refresh_from_db()
    assert alarm.state == "active"


def test_resolving_closes_an_alarm_and_a_new_raise_opens_another(admin_client, admin_user):
    alarm = open_alarm("duress", "pdk:door:1070000:2")
    act_on(admin_client, "resolve", [alarm], apply="Resolve", note="False alarm, checked with the resident")
    alarm.refresh_from_db()
    assert (alarm.state, alarm.resolved_by) == ("resolved", admin_user)

    again = Event.objects.create(
        source="pdk", event_type="door.request.duress", dedup_key="again", received_at="2026-11-01T11:00Z", payload={}
    )
    reopened = domain.raise_alarm("duress", "pdk:door:1070000:2", again, again.received_at)
    assert reopened.pk != alarm.pk and reopened.state == "active"


def test_a_cleared_alarm_cannot_be_acknowledged_and_the_manager_is_told(admin_client):
    alarm = open_alarm()
    Alarm.objects.filter(pk=alarm.pk).update(state="cleared")
    response = act_on(admin_client, "acknowledge", [alarm], apply="Acknowledge", note="late")
    assert "only active alarms can be acknowledged" in response.content.decode()
    alarm.refresh_from_db()
    assert alarm.state == "cleared"


def test_alarm_actions_need_the_change_permission(client, django_user_model):
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_alarm"))
    client.force_login(viewer)
    alarm = open_alarm()
    act_on(client, "acknowledge", [alarm], apply="Acknowledge", note="not allowed")
    alarm.refresh_from_db()
    assert alarm.state == "active"


def test_placing_a_hub_rehomes_its_locks(admin_client):
    site = Site.objects.create(name="North tower")
    hub = domain.placement(Placement.Kind.SPK_HUB, "hub-1", "Lobby hub")
    lock = Lock.objects.create(vendor="spk", external_id="uuid-2", placement=hub)
    url = reverse("admin:portal_hub_change", args=[hub.pk])
    response = admin_client.post(url, {"name": "Lobby hub", "site": site.pk})
    assert response.status_code == 302
    lock.refresh_from_db()
    assert lock.site == site


def test_credentials_list_filters_active_ones(admin_client):
    kept = Credential.objects.create(vendor="spk", kind="physical_key", external_id="K1", issued_at="2026-01-01T00:00Z")
    Credential.objects.create(
        vendor="spk",
        kind="physical_key",
        external_id="K2",
        issued_at="2026-01-01T00:00Z",
        removed_at="2026-02-01T00:00Z",
    )
    response = admin_client.get(changelist("credential"), {"active": "yes"})
    assert list(response.context["cl"].result_list) == [kept]


def test_a_note_is_optional_unless_a_critical_alarm_is_selected(admin_client):
    minor = open_alarm("reader_error", "pdk:reader:1070000")
    act_on(admin_client, "acknowledge", [minor], apply="Acknowledge", note="")
    minor.refresh_from_db()
    assert minor.state == "acknowledged"

    critical = open_alarm("door_forced", "pdk:door:1070000:9")
    response = act_on(admin_client, "acknowledge", [critical], apply="Acknowledge", note="")
    assert "A note is required" in response.content.decode()
    critical.refresh_from_db()
    assert critical.state == "active"


def test_bulk_acknowledge_records_each_in_the_history(admin_client, admin_user):
    alarms = [open_alarm("door_propped", f"pdk:door:1070000:{door}") for door in (1, 2, 3)]
    act_on(admin_client, "acknowledge", alarms, apply="Acknowledge", note="Walked the floor")
    for alarm in alarms:
        alarm.refresh_from_db()
        assert alarm.state == "acknowledged"
        entry = LogEntry.objects.get(object_id=str(alarm.pk), content_type__model="alarm")
        assert entry.user == admin_user and "Walked the floor" in entry.get_change_message()


def test_a_resolved_alarm_can_be_reopened_unless_another_is_open(admin_client):
    alarm = open_alarm("duress", "pdk:door:1070000:4")
    act_on(admin_client, "resolve", [alarm], apply="Resolve", note="Checked")
    act_on(admin_client, "reopen", [alarm], apply="Reopen", note="It happened again")
    alarm.refresh_from_db()
    assert alarm.state == "active" and alarm.resolved_at is None

    act_on(admin_client, "resolve", [alarm], apply="Resolve", note="Checked again")
    newer = open_alarm("duress", "pdk:door:1070000:4", event=_event("newer-duress"))
    response = act_on(admin_client, "reopen", [alarm], apply="Reopen", note="")
    assert "already open" in response.content.decode()
    alarm.refresh_from_db()
    assert alarm.state == "resolved" and newer.state == "active"


def test_the_console_lists_open_alarms_first_most_severe_then_oldest(admin_client):
    cleared = open_alarm("door_forced", "pdk:door:1:1", event=_event("a", "2026-11-01T08:00Z"))
    Alarm.objects.filter(pk=cleared.pk).update(state="cleared")
    minor_old = open_alarm("reader_error", "pdk:reader:1", event=_event("b", "2026-11-01T09:00Z"))
    critical_new = open_alarm("door_forced", "pdk:door:1:2", event=_event("c", "2026-11-01T12:00Z"))
    critical_old = open_alarm("duress", "pdk:door:1:3", event=_event("d", "2026-11-01T10:00Z"))
    shown = list(admin_client.get(changelist("alarm")).context["cl"].result_list)
    assert shown == [critical_old, critical_new, minor_old, Alarm.objects.get(pk=cleared.pk)]


def _event(key: str, at: str = "2026-11-01T10:00Z") -> Event:
    created = Event.objects.create(source="pdk", event_type="x", dedup_key=key, received_at=at, payload={})
    return Event.objects.get(pk=created.pk)  # received_at as a datetime


def test_lock_page_timeline_mixes_activity_and_alarms_newest_first(admin_client):
    door = Lock.objects.create(vendor="pdk", external_id="1070000:7", name="Loading dock")
    request = _event("request", "2026-11-01T09:00Z")
    Activity.objects.create(
        event=request, occurred_at=request.received_at, lock=door, action="request", result="allowed"
    )
    forced = _event("forced", "2026-11-01T10:00Z")
    domain.raise_alarm("door_forced", "pdk:door:1070000:7", forced, forced.received_at, lock_=door)
    cleared = _event("forced-cleared", "2026-11-01T11:00Z")
    domain.clear_alarm("door_forced", "pdk:door:1070000:7", cleared, cleared.received_at, lock_=door)

    page = admin_client.get(reverse("admin:portal_lock_change", args=[door.pk])).content.decode()

    order = [page.index(text) for text in ("alarm cleared: door_forced", "alarm: door_forced", "request allowed")]
    assert order == sorted(order)
    for event in (request, forced, cleared):
        assert reverse("admin:events_event_change", args=[event.pk]) in page


@pytest.mark.django_db(transaction=True)
def test_reopening_while_a_worker_raises_at_the_same_door_waits_for_it_and_then_refuses(admin_user):
    import threading

    door = Lock.objects.create(vendor="pdk", external_id="1070000:8", name="Side gate")
    first = _event("propped-1", "2026-11-01T09:00Z")
    resolved = domain.raise_alarm("door_propped", "pdk:door:1070000:8", first, first.received_at, lock_=door)
    domain.resolve_alarm(resolved, admin_user, "Closed it")
    again = _event("propped-2", "2026-11-01T10:00Z")
    raising, commit = threading.Event(), threading.Event()
    outcome = {}

    def worker():  # a worker processing the door's next alarm, its transaction still open
        try:
            with transaction.atomic():
                found = domain.lock("pdk", "1070000:8")
                domain.raise_alarm("door_propped", "pdk:door:1070000:8", again, again.received_at, lock_=found)
                raising.set()
                commit.wait(10)
        finally:
            connection.close()

    def manager():
        try:
            domain.reopen_alarm(resolved, admin_user, "It is open again")
            outcome["result"] = "reopened"
        except Exception as exc:  # what the admin would have to show
            outcome["result"] = exc
        finally:
            connection.close()

    working = threading.Thread(target=worker)
    working.start()
    assert raising.wait(10)
    reopening = threading.Thread(target=manager)
    reopening.start()
    reopening.join(0.5)
    assert reopening.is_alive(), "the reopen went ahead while the worker held the door"
    commit.set()
    working.join(10)
    reopening.join(10)

    assert isinstance(outcome["result"], domain.AlarmStateError)
    assert "already open" in str(outcome["result"])
    assert list(Alarm.objects.filter(subject="pdk:door:1070000:8").order_by("pk").values_list("state", flat=True)) == [
        "resolved",
        "active",
    ]

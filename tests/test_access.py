"""Who sees what: managers and viewers see only their sites; roles, onboarding commands, lockout."""

import csv
import io
import json

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.urls import reverse

from events import processing
from events.models import Event
from portal.models import AccessGrant, Activity, Alarm, Lock, Placement, Resident, Site
from subscriptions.models import NotificationRule
from tests.vendors import fixture_bytes

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-enough-passphrase-42"


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def door_event(post, endpoint, panel: str, door_name: str, topic: str = "door.alarm.forced") -> Event:
    payload = json.loads(fixture_bytes("pdk", f"{topic}.json"))
    payload["panelId"] = panel
    payload["metadata"]["doorName"] = door_name
    event_id = post(endpoint, json.dumps(payload).encode()).json()["event_id"]
    processing.process(event_id)
    return Event.objects.get(pk=event_id)


@pytest.fixture
def two_buildings(post, endpoint_for):
    """North and South, each with a PDK panel, a door with a forced-door alarm, and a resident."""
    buildings = {}
    for name, panel in (("North", "1000001"), ("South", "2000002")):
        run("site", "add", name, "--timezone", "Europe/Paris")
        run("site", "assign", name, "--pdk-panel", panel)
        endpoint = endpoint_for("pdk", site=Site.objects.get(name=name))
        event = door_event(post, endpoint, panel, f"{name} lobby door")
        lock = Lock.objects.get(external_id=f"{panel}:1")
        person = Resident.objects.create(vendor="spk", external_id=f"user-{name}", name=f"{name} resident")
        AccessGrant.objects.create(resident=person, lock=lock, level="USER", granted_at=event.received_at)
        buildings[name] = {"lock": lock, "alarm": Alarm.objects.get(lock=lock), "event": event, "resident": person}
    return buildings


@pytest.fixture
def north_manager(client, two_buildings, django_user_model):
    run("manager", "add", "nina", "--password", PASSWORD, "--sites", "North")
    client.force_login(django_user_model.objects.get(username="nina"))
    return client


@pytest.fixture
def north_viewer(client, two_buildings, django_user_model):
    run("manager", "add", "victor", "--password", PASSWORD, "--sites", "North", "--viewer")
    client.force_login(django_user_model.objects.get(username="victor"))
    return client


def listed(client, model: str, **params) -> list:
    response = client.get(reverse(f"admin:{model}_changelist"), params)
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ("portal_lock", "lock"),
        ("portal_alarm", "alarm"),
        ("portal_resident", "resident"),
        ("events_event", "event"),
    ],
)
def test_a_manager_lists_only_their_sites(north_manager, two_buildings, model, key):
    assert listed(north_manager, model) == [two_buildings["North"][key]]


def test_every_building_list_is_scoped(north_manager, two_buildings):
    south_site = Site.objects.get(name="South")
    assert listed(north_manager, "portal_site") == [Site.objects.get(name="North")]
    assert south_site not in {p.site for p in listed(north_manager, "portal_placement")}
    assert all(a.site.name == "North" for a in listed(north_manager, "portal_activity"))
    assert all(g.lock.site.name == "North" for g in listed(north_manager, "portal_accessgrant"))
    assert all(e.site.name == "North" for e in listed(north_manager, "events_endpoint"))


def test_another_sites_objects_are_not_found(north_manager, two_buildings):
    south = two_buildings["South"]
    for model, obj in (
        ("portal_lock", south["lock"]),
        ("portal_alarm", south["alarm"]),
        ("events_event", south["event"]),
    ):
        assert north_manager.get(reverse(f"admin:{model}_change", args=[obj.pk])).status_code == 404
    north_lock = two_buildings["North"]["lock"]
    assert north_manager.get(reverse("admin:portal_lock_change", args=[north_lock.pk])).status_code == 200


def test_search_does_not_reach_another_site(north_manager):
    assert listed(north_manager, "portal_lock", q="South lobby") == []
    assert listed(north_manager, "portal_resident", q="South") == []


def test_site_filter_offers_only_their_sites(north_manager):
    response = north_manager.get(reverse("admin:portal_alarm_changelist"))
    choices = [
        c["display"]
        for spec in response.context["cl"].filter_specs
        if spec.title == "site"
        for c in spec.choices(response.context["cl"])
    ]
    assert "North" in choices and "South" not in choices


def test_filtering_on_another_sites_id_shows_nothing(north_manager):
    south = Site.objects.get(name="South")
    assert listed(north_manager, "portal_lock", site__id__exact=south.pk) == []


def test_a_superuser_sees_every_site(admin_client, two_buildings):
    assert len(listed(admin_client, "portal_lock")) == 2


def test_a_manager_acknowledges_their_sites_alarms(north_manager, two_buildings):
    alarm = two_buildings["North"]["alarm"]
    data = {"action": "acknowledge", "_selected_action": [alarm.pk], "apply": "1", "note": "On my way"}
    north_manager.post(reverse("admin:portal_alarm_changelist"), data)
    alarm.refresh_from_db()
    assert alarm.state == "acknowledged" and alarm.acknowledged_by.username == "nina"


def test_a_manager_cannot_act_on_another_sites_alarm(north_manager, two_buildings):
    alarm = two_buildings["South"]["alarm"]
    data = {"action": "acknowledge", "_selected_action": [alarm.pk], "apply": "1", "note": "Not mine"}
    north_manager.post(reverse("admin:portal_alarm_changelist"), data)
    alarm.refresh_from_db()
    assert alarm.state == "active"


def test_a_viewer_sees_but_cannot_acknowledge(north_viewer, two_buildings):
    alarm = two_buildings["North"]["alarm"]
    assert listed(north_viewer, "portal_alarm") == [alarm]
    data = {"action": "acknowledge", "_selected_action": [alarm.pk], "apply": "1", "note": "Viewer"}
    north_viewer.post(reverse("admin:portal_alarm_changelist"), data)
    alarm.refresh_from_db()
    assert alarm.state == "active"


def test_roles_are_groups_created_by_migration():
    manager, viewer = Group.objects.get(name="Building manager"), Group.objects.get(name="Viewer")
    manager_perms = set(manager.permissions.values_list("codename", flat=True))
    viewer_perms = set(viewer.permissions.values_list("codename", flat=True))
    assert {"view_lock", "view_alarm", "view_event", "change_alarm"} <= manager_perms
    assert "view_alarm" in viewer_perms and not any(p.startswith(("change_", "add_", "delete_")) for p in viewer_perms)


def test_placing_a_panel_from_the_command_line_rehomes_what_already_arrived(post, endpoint_for):
    endpoint = endpoint_for("pdk")
    door_event(post, endpoint, "3000003", "East door")
    lock = Lock.objects.get(external_id="3000003:1")
    assert lock.site is None

    run("site", "add", "East")
    output = run("site", "assign", "East", "--pdk-panel", "3000003")

    lock.refresh_from_db()
    assert lock.site.name == "East" and "1 lock(s)" in output
    assert Alarm.objects.get(lock=lock).site.name == "East"  # its managers see what already happened there
    assert Placement.objects.get(external_id="3000003").site.name == "East"


def test_a_placement_assigned_before_it_reports_homes_what_arrives_later(post, endpoint_for):
    run("site", "add", "West")
    run("site", "assign", "West", "--seam-account", "00000000-0000-0000-0000-000000000000")
    event_id = post(endpoint_for("seam"), fixture_bytes("seam", "lock.locked.json")).json()["event_id"]
    processing.process(event_id)
    assert Activity.objects.get().site.name == "West"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("site", "add", "Tower", "--timezone", "Mars/Olympus"), "not a known IANA timezone"),
        (("site", "assign", "Nowhere", "--spk-hub", "hub-1"), "No site named 'Nowhere'"),
        (("manager", "add", "ann", "--password", PASSWORD, "--sites", "Nowhere"), "No site named 'Nowhere'"),
        (("manager", "add", "ann", "--password", "123", "--sites", "Tower"), "password:"),
    ],
)
def test_bad_input_exits_non_zero_with_a_message(args, message):
    Site.objects.create(name="Tower")
    with pytest.raises(CommandError, match=message):
        call_command(*args)


def test_a_site_name_is_taken_once():
    run("site", "add", "Tower")
    with pytest.raises(CommandError, match="already exists"):
        call_command("site", "add", "Tower")


def test_repeated_failed_logins_lock_the_account_out(client, django_user_model, settings):
    django_user_model.objects.create_user("mallory-target", password=PASSWORD, is_staff=True)
    login = reverse("admin:login")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(login, {"username": "mallory-target", "password": "wrong"})
    response = client.post(login, {"username": "mallory-target", "password": PASSWORD})
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_manager_logs_in_with_the_password_they_were_given(client, two_buildings):
    run("manager", "add", "nina", "--password", PASSWORD, "--sites", "North")
    response = client.post(reverse("admin:login"), {"username": "nina", "password": PASSWORD, "next": "/admin/"})
    assert response.status_code == 302 and client.session["_auth_user_id"]


def test_sessions_expire(north_manager, settings):
    assert north_manager.session.get_expiry_age() == settings.SESSION_COOKIE_AGE <= 12 * 3600


def export(client, model: str, **params):
    response = client.get(reverse(f"admin:portal_{model}_export"), params)
    assert response.status_code == 200 and response.streaming
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_csv_export_follows_the_filters_and_the_managers_sites(north_manager, two_buildings):
    rows = export(north_manager, "alarm")
    assert rows[0][:3] == ["kind", "severity", "state"]
    assert [row[3] for row in rows[1:]] == ["North"]  # South's alarm is not theirs
    assert export(north_manager, "alarm", state__exact="cleared")[1:] == []


def test_csv_export_of_activity_streams_every_page(admin_client, two_buildings):
    lock = two_buildings["North"]["lock"]
    for n in range(150):  # more than a page of the list
        event = Event.objects.create(
            source="pdk",
            event_type="door.request.allowed",
            dedup_key=f"bulk-{n}",
            received_at="2026-11-01T10:00Z",
            payload={},
        )
        Activity.objects.create(event=event, occurred_at=event.received_at, lock=lock, site=lock.site, action="request")
    rows = export(admin_client, "activity", action__exact="request")
    assert len(rows) == 1 + 150
    assert rows[1][2] == "North lobby door"


def test_the_list_links_to_its_export_with_its_filters(north_manager):
    page = north_manager.get(reverse("admin:portal_alarm_changelist"), {"state__exact": "active"}).content.decode()
    assert reverse("admin:portal_alarm_export") + "?state__exact=active" in page


def rule_form(**changes) -> dict:
    data = {
        "name": "Front desk",
        "active": "on",
        "channel": "email",
        "emails": "desk@example.com",
        "alarm_kinds": ["door_forced"],
        "critical_in_quiet_hours": "on",
    }
    return {**data, **changes}


def test_a_manager_manages_rules_for_their_sites_only(north_manager, two_buildings):
    north, south = Site.objects.get(name="North"), Site.objects.get(name="South")
    add = reverse("admin:subscriptions_notificationrule_add")

    everywhere = north_manager.post(add, rule_form())
    assert "sites" in everywhere.context["adminform"].form.errors  # "every site" is a superuser's rule
    elsewhere = north_manager.post(add, rule_form(sites=[south.pk]))
    assert "sites" in elsewhere.context["adminform"].form.errors
    assert north_manager.post(add, rule_form(sites=[north.pk])).status_code == 302

    theirs = NotificationRule.objects.get(name="Front desk")
    other = NotificationRule.objects.create(name="South desk", channel="email", emails=["s@example.com"])
    other.sites.set([south])
    assert listed(north_manager, "subscriptions_notificationrule") == [theirs]
    change = reverse("admin:subscriptions_notificationrule_change", args=[other.pk])
    assert north_manager.get(change).status_code == 404


def test_a_viewer_sees_rules_but_cannot_add_one(north_viewer, two_buildings):
    north = Site.objects.get(name="North")
    response = north_viewer.post(reverse("admin:subscriptions_notificationrule_add"), rule_form(sites=[north.pk]))
    assert response.status_code == 403
    assert not NotificationRule.objects.exists()

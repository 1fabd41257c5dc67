"""Notification rules: validation, matching, quiet hours, storm control, reminders, replays, the message.

The broker step is replaced here by running each announced fan-out and each send in the test
itself (after the batch's commit, as the worker would); tests/test_notifications_workers.py runs
the same through real Celery workers.
"""

import io
import json
from datetime import UTC, datetime, time, timedelta

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.core.management import CommandError, call_command
from django.urls import reverse

from events import processing, sources
from events.models import Event
from portal import domain
from portal.models import Alarm, AlarmChange, Site
from subscriptions import notifications, tasks
from subscriptions.models import Notification, NotificationAttempt, NotificationRule
from tests.vendors import fixture_bytes, fixture_files
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.django_db

T0 = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC


@pytest.fixture(autouse=True)
def settings_for_notifications(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.PORTAL_PUBLIC_URL = "https://portal.example.com"
    settings.PORTAL_NOTIFY_STORM_WINDOW_SECONDS = 600
    notifications.clock.set(datetime(2024, 3, 4, 12, 0, tzinfo=UTC))  # a Monday, noon UTC
    yield
    notifications.clock.reset()


@pytest.fixture
def announced(monkeypatch):
    """The alarm changes committed and not yet fanned out; the fan-out tasks their commits would
    publish are counted instead (the test runs them: run_announced)."""
    published = []
    monkeypatch.setattr(tasks.fan_out_alarms, "delay", lambda *args: published.append(args))
    pending = AlarmChange.objects.filter(fanned_out_at__isnull=True)
    pending.published = published
    return pending


@pytest.fixture
def site():
    site = Site.objects.create(name="Harbour House", timezone="Europe/Paris")
    domain.place(domain.placement("pdk_panel", "1070000"), site)
    return site


@pytest.fixture
def deliver_pdk(post, endpoint_for, announced, django_capture_on_commit_callbacks):
    """Post a PDK payload through the ingress, process it, then fan out and send what it announced."""
    endpoint = endpoint_for("pdk")

    def _deliver(topic: str, occurred: int, event_id: str, door: int = 1) -> Event:
        payload = json.loads(fixture_bytes("pdk", f"{topic}.json"))
        payload.update(id=event_id)
        payload["metadata"]["occurred"] = occurred
        payload["body"]["doorId"] = door
        with django_capture_on_commit_callbacks(execute=True):
            event_id = post(endpoint, json.dumps(payload).encode()).json()["event_id"]
            processing.process(event_id)
        run_announced(announced)
        return Event.objects.get(pk=event_id)

    return _deliver


def run_announced(announced=None) -> list[int]:
    """What a worker does with the fan-out task, then with each send task it publishes."""
    pks = notifications.fan_out_pending()
    for pk in pks:
        notifications.deliver(pk)
    return pks


def email_rule(**fields) -> NotificationRule:
    defaults = {"name": "Security desk", "channel": "email", "emails": ["desk@example.com"]}
    defaults |= fields
    rule = NotificationRule(**defaults)
    rule.full_clean()
    rule.save()
    return rule


# --- validation: the admin's form and the command ---------------------------------------------------


def rule_form_data(**changes) -> dict:
    data = {
        "name": "Doors",
        "active": "on",
        "channel": "email",
        "emails": "desk@example.com",
        "alarm_kinds": ["door_forced"],
        "min_severity": "",
        "event_types": "",
        "url": "",
        "repeat_minutes": "",
        "quiet_start": "",
        "quiet_end": "",
        "critical_in_quiet_hours": "on",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"channel": "webhook", "emails": "", "url": "ftp://example.com/x"}, "url", "must be an http"),
        ({"channel": "webhook", "emails": "", "url": "https://portal.example.com/hook"}, "url", "portal itself"),
        ({"channel": "webhook", "emails": ""}, "url", "needs a URL"),
        ({"alarm_kinds": [], "min_severity": "", "event_types": ""}, "alarm_kinds", "at least one trigger"),
        ({"emails": ""}, "emails", "at least one recipient"),
        ({"emails": "desk@example.com, not-an-address"}, "emails", "not an email address"),
        ({"url": "https://hooks.example.com/x"}, "url", "Only webhook rules"),
        ({"quiet_start": "22:00", "quiet_days": ["0"]}, "quiet_end", "both a start and an end"),
        ({"quiet_start": "22:00", "quiet_end": "06:00"}, "quiet_days", "Choose the days"),
        ({"event_types": "door alarm"}, "event_types", "Unknown event types: door alarm."),
    ],
)
def test_rule_form_shows_each_problem_on_its_field(admin_client, changes, field, message):
    response = admin_client.post(reverse("admin:subscriptions_notificationrule_add"), rule_form_data(**changes))
    assert response.status_code == 200, "the form should have been refused"
    errors = response.context["adminform"].form.errors
    assert message in " ".join(errors.get(field, [])), errors


def test_rule_form_refuses_a_user_without_an_email_address(admin_client):
    nobody = User.objects.create_user("nomail")
    response = admin_client.post(
        reverse("admin:subscriptions_notificationrule_add"), rule_form_data(emails="", users=[nobody.pk])
    )
    assert "has no email address" in " ".join(response.context["adminform"].form.errors["users"])


def test_admin_offers_the_domain_alarm_kinds(admin_client):
    page = admin_client.get(reverse("admin:subscriptions_notificationrule_add")).content.decode()
    for kind, (label, _) in domain.ALARM_KINDS.items():
        assert f'value="{kind}"' in page and label in page


def test_webhook_rule_from_the_admin_shows_its_secret_once(admin_client):
    url = reverse("admin:subscriptions_notificationrule_add")
    data = rule_form_data(channel="webhook", emails="", url="https://hooks.example.com/alarms")
    response = admin_client.post(url, data, follow=True)
    rule = NotificationRule.objects.get()
    assert rule.secret.startswith("whsec_")
    shown = [str(m) for m in response.context["messages"]]
    assert any(rule.secret in m for m in shown)
    assert rule.owner.username == "admin"
    # Never again: not on its page, not in the list.
    change = reverse("admin:subscriptions_notificationrule_change", args=[rule.pk])
    assert rule.secret not in admin_client.get(change).content.decode()
    assert (
        rule.secret not in admin_client.get(reverse("admin:subscriptions_notificationrule_changelist")).content.decode()
    )


def run_command(*args) -> str:
    out = io.StringIO()
    call_command("notification_rule", *args, stdout=out)
    return out.getvalue()


def test_command_creates_a_webhook_rule_and_prints_its_secret_last():
    site = Site.objects.create(name="Harbour House")
    out = run_command(
        "add", "--name", "Ops", "--channel", "webhook", "--url", "https://hooks.example.com/a",
        "--sites", "Harbour House", "--alarm-kinds", "door_forced,door_propped", "--notify-cleared",
    )  # fmt: skip
    rule = NotificationRule.objects.get()
    assert out.strip().splitlines()[-1] == rule.secret and rule.secret.startswith("whsec_")
    assert list(rule.sites.all()) == [site] and rule.notify_cleared
    listed = run_command("list")
    assert "Ops" in listed and rule.secret not in listed


def test_command_creates_an_email_rule_for_users_and_addresses():
    User.objects.create_user("ana", email="ana@example.com")
    run_command("add", "--name", "Mail", "--channel", "email", "--to", "a@example.com", "--users", "ana",
                "--min-severity", "major", "--repeat-minutes", "15")  # fmt: skip
    rule = NotificationRule.objects.get()
    assert notifications.recipients(rule) == ["a@example.com", "ana@example.com"]
    assert rule.min_severity == "major" and rule.repeat_minutes == 15


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--channel", "webhook", "--url", "gopher://x", "--alarm-kinds", "door_forced"], "url: The webhook URL"),
        (["--channel", "webhook", "--url", "https://portal.example.com/x", "--min-severity", "major"], "portal itself"),
        (["--channel", "email", "--to", "a@example.com"], "at least one trigger"),
        (["--channel", "email", "--alarm-kinds", "door_forced"], "at least one recipient"),
        (
            ["--channel", "email", "--to", "a@example.com", "--alarm-kinds", "door_open"],
            "Unknown alarm kinds: door_open",
        ),
        (["--channel", "email", "--to", "a@example.com", "--min-severity", "huge"], "min_severity"),
        (["--channel", "sms", "--to", "a@example.com", "--min-severity", "major"], "channel"),
        (["--channel", "email", "--users", "ghost", "--min-severity", "major"], "no such user: ghost"),
        (["--channel", "email", "--to", "a@b.com", "--sites", "Nowhere", "--min-severity", "major"], "no such site"),
    ],
)
def test_command_refuses_bad_rules_with_a_message(args, message):
    with pytest.raises(CommandError, match=message):
        run_command("add", "--name", "Bad", *args)
    assert not NotificationRule.objects.exists()


# --- fan-out and the message -------------------------------------------------------------------------


def test_door_forced_email_names_site_door_kind_severity_local_time_count_and_link(site, deliver_pdk):
    email_rule(alarm_kinds=["door_forced"])
    deliver_pdk("door.alarm.forced", T0, "f-1")
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    alarm = Alarm.objects.get()
    assert message.to == ["desk@example.com"]
    assert "Door forced open" in message.subject and "Harbour House" in message.subject
    body = message.body
    assert "Door Name" in body and "critical" in body and "Occurrences: 1" in body
    assert "2023-11-14 23:13:20 (Europe/Paris)" in body  # T0 in the site's timezone
    assert f"https://portal.example.com/admin/portal/alarm/{alarm.pk}/change/" in body
    html = message.alternatives[0][0]
    assert "Door forced open" in html and f"/admin/portal/alarm/{alarm.pk}/change/" in html
    note = Notification.objects.get()
    assert (note.status, note.change, note.attempts) == ("sent", "raised", 1)
    assert NotificationAttempt.objects.get().succeeded


def test_rules_match_by_site_kind_and_severity(site, deliver_pdk):
    elsewhere = Site.objects.create(name="Elsewhere")
    email_rule(name="kinds", alarm_kinds=["door_propped"])
    email_rule(name="severity", min_severity="critical", emails=["sev@example.com"])
    other = email_rule(name="other site", min_severity="minor", emails=["other@example.com"])
    other.sites.set([elsewhere])
    deliver_pdk("door.alarm.forced", T0, "f-1")
    assert [m.to for m in mail.outbox] == [["sev@example.com"]]


def test_event_type_trigger_matches_the_alarm_raised_by_that_event(site, deliver_pdk):
    email_rule(event_types=["door.alarm.propped.on"])
    deliver_pdk("door.alarm.forced", T0, "f-1")
    deliver_pdk("door.alarm.propped.on", T0, "p-1", door=2)
    assert len(mail.outbox) == 1 and "Door propped open" in mail.outbox[0].subject


def test_clearing_notifies_only_rules_that_ask(site, deliver_pdk):
    email_rule(name="raises only", alarm_kinds=["door_forced"])
    email_rule(name="and clears", alarm_kinds=["door_forced"], emails=["clear@example.com"], notify_cleared=True)
    deliver_pdk("door.alarm.forced", T0, "f-1")
    notifications.clock.advance(timedelta(hours=1))  # past the storm window
    deliver_pdk("door.alarm.forced.cleared", T0 + 60_000, "f-2")
    cleared = [m for m in mail.outbox if m.subject.startswith("Cleared")]
    assert [m.to for m in cleared] == [["clear@example.com"]]
    assert "cleared at 2023-11-14 23:14:20 (Europe/Paris)" in cleared[0].body
    assert Notification.objects.filter(change="cleared").count() == 1


def test_nothing_is_announced_for_a_rolled_back_batch(site, post, endpoint_for, announced, monkeypatch,
                                                      django_capture_on_commit_callbacks):  # fmt: skip
    email_rule(alarm_kinds=["door_forced"])
    body = fixture_bytes("pdk", "door.alarm.forced.json")
    event_id = post(endpoint_for("pdk"), body).json()["event_id"]

    def failing(*args, **kwargs):
        raise RuntimeError("boom")

    # The alarm is raised, then the handler fails: its savepoint goes, and the announcement with it.
    monkeypatch.setattr(processing.sources.get("pdk"), "HANDLERS", {
        "door.alarm.forced": lambda event: (
            domain.raise_alarm("door_forced", "pdk:door:x", event, event.received_at), failing()
        ),
    })  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        assert processing.process(event_id) == "failed"
    assert not announced.exists() and announced.published == [] and not Alarm.objects.exists()


# --- rules on events that are not alarms ---------------------------------------------------------------


def test_an_event_type_rule_emails_each_such_event_naming_door_site_who_time_and_link(site, deliver_pdk):
    email_rule(event_types=["door.request.denied"])
    event = deliver_pdk("door.request.denied", T0, "d-1")
    deliver_pdk("door.request.allowed", T0, "a-1")  # not named by the rule
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.subject == "door.request.denied (denied) at Door Name, Harbour House"
    assert "At 2023-11-14 23:13:20 (Europe/Paris)" in message.body  # T0 in the site's timezone
    assert "Door or lock: Door Name" in message.body and "What: request, denied" in message.body
    assert f"https://portal.example.com/admin/events/event/{event.pk}/change/" in message.body
    assert "door.request.denied" in message.alternatives[0][0]
    note = Notification.objects.get()
    assert (note.event, note.alarm, note.change, note.status, note.site) == (event, None, "event", "sent", site)


def test_the_admin_lists_alarm_and_event_notifications_each_linking_to_what_it_is_about(
    admin_client, site, deliver_pdk
):
    email_rule(event_types=["door.request.denied"], alarm_kinds=["door_forced"])
    event = deliver_pdk("door.request.denied", T0, "d-1")
    deliver_pdk("door.alarm.forced", T0, "f-1")
    listing = admin_client.get(reverse("admin:subscriptions_notification_changelist")).content.decode()
    assert str(event) in listing and "door_forced on Door Name" in listing
    note = Notification.objects.get(event=event)
    page = admin_client.get(reverse("admin:subscriptions_notification_change", args=[note.pk])).content.decode()
    assert reverse("admin:events_event_change", args=[event.pk]) in page and "event.received" in page
    found = admin_client.get(reverse("admin:subscriptions_notification_changelist"), {"q": event.pk})
    assert note in found.context["cl"].result_list  # by the id of its event (or alarm)


def test_an_event_that_raises_an_alarm_is_told_once_as_that_alarm(site, deliver_pdk):
    email_rule(event_types=["door.alarm.forced", "door.request.denied"])
    deliver_pdk("door.alarm.forced", T0, "f-1")
    assert [m.subject for m in mail.outbox] == ["Critical: Door forced open at Door Name, Harbour House"]
    assert Notification.objects.get().alarm.kind == "door_forced"


def test_a_rule_naming_the_clearing_event_hears_the_clear_without_asking_for_clears(site, deliver_pdk):
    email_rule(event_types=["door.alarm.forced.cleared"])
    deliver_pdk("door.alarm.forced", T0, "f-1")  # the raise's type is not named: no message
    deliver_pdk("door.alarm.forced.cleared", T0 + 60_000, "f-2")
    assert [m.subject.split(":")[0] for m in mail.outbox] == ["Cleared"]


def test_an_event_that_records_no_activity_is_placed_at_its_panels_site(
    site, post, endpoint_for, announced, django_capture_on_commit_callbacks
):
    email_rule(name="here", event_types=["panel.deleted"]).sites.set([site])
    email_rule(name="elsewhere", emails=["else@example.com"], event_types=["panel.deleted"]).sites.set(
        [Site.objects.create(name="Else")]
    )
    with django_capture_on_commit_callbacks(execute=True):
        event_id = post(endpoint_for("pdk"), fixture_bytes("pdk", "panel.deleted.json")).json()["event_id"]
        processing.process(event_id)
    run_announced(announced)
    assert [m.to for m in mail.outbox] == [["desk@example.com"]]
    assert mail.outbox[0].subject == "panel.deleted, Harbour House"
    note = Notification.objects.get()
    assert (note.site, note.topic) == (site, f"event:panel.deleted:site:{site.pk}")
    assert Event.objects.get().endpoint.site is None  # known from the panel its handler met


def test_a_door_forced_and_cleared_before_the_fan_out_still_tells_the_raise(
    site, post, endpoint_for, announced, django_capture_on_commit_callbacks
):
    email_rule(alarm_kinds=["door_forced"])
    endpoint = endpoint_for("pdk")
    with django_capture_on_commit_callbacks(execute=True):
        ids = [
            post(endpoint, fixture_bytes("pdk", f"{topic}.json")).json()["event_id"]
            for topic in ("door.alarm.forced", "door.alarm.forced.cleared")
        ]
        processing.process_batch(ids)  # one batch: the alarm is over before any rule hears of it
    run_announced(announced)
    assert [m.subject for m in mail.outbox] == ["Critical: Door forced open at Door Name, Harbour House"]
    assert "State: cleared" in mail.outbox[0].body


def test_event_rules_keep_to_their_sites_and_quiet_hours(site, deliver_pdk):
    email_rule(name="elsewhere", event_types=["door.request.denied"]).sites.set([Site.objects.create(name="Else")])
    email_rule(
        name="quiet", emails=["night@example.com"], event_types=["door.request.denied"],
        quiet_days=list(range(7)), quiet_start=time(22), quiet_end=time(7),
    )  # fmt: skip
    notifications.clock.set(datetime(2024, 3, 4, 22, 30, tzinfo=UTC))  # 23:30 in Paris
    deliver_pdk("door.request.denied", T0, "d-1")
    assert mail.outbox == []
    assert Notification.objects.get().reason == "quiet hours"  # events have no severity to break through


def test_a_burst_of_denied_requests_at_one_door_is_one_message_and_a_summary_with_the_count(site, deliver_pdk):
    email_rule(event_types=["door.request.denied"])
    for i in range(20):
        deliver_pdk("door.request.denied", T0 + i * 1000, f"d-{i}")
        notifications.clock.advance(timedelta(seconds=20))
    deliver_pdk("door.request.denied", T0, "other-door", door=2)  # another door: its own window
    assert len(mail.outbox) == 2
    notifications.clock.advance(timedelta(minutes=5))  # the window ends
    assert notifications.send_due() == 1
    summary = Notification.objects.get(change="storm")
    notifications.deliver(summary.pk)
    assert (
        mail.outbox[2].subject == "Again and again (19 more): door.request.denied (denied) at Door Name, Harbour House"
    )
    summary.refresh_from_db()
    assert summary.payload["type"] == "event.storm" and summary.payload["data"]["occurrences"] == 19
    latest = Event.objects.filter(event_type="door.request.denied").order_by("-occurred_at").first()
    assert summary.payload["data"]["event_id"] == latest.pk  # the summary tells the latest


def test_a_seam_unlock_reaches_a_webhook_rule_signed_with_the_vendor_event(
    post, endpoint_for, announced, django_capture_on_commit_callbacks
):
    site = Site.objects.create(name="Pier 4", timezone="America/New_York")
    domain.place(domain.placement("seam_account", "00000000-0000-0000-0000-000000000000"), site)
    with WebhookReceiver() as receiver:
        rule = NotificationRule(name="unlocks", channel="webhook", url=receiver.url, event_types=["lock.unlocked"])
        rule.secret = receiver.secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        rule.full_clean()
        rule.save()
        with django_capture_on_commit_callbacks(execute=True):
            event_id = post(endpoint_for("seam"), fixture_bytes("seam", "lock.unlocked.json")).json()["event_id"]
            processing.process(event_id)
        run_announced(announced)
        [got] = receiver.received
    assert got.verified, got.error
    assert got.payload["type"] == "event.received"
    data = got.payload["data"]
    assert (data["source"], data["event_type"], data["event_id"]) == ("seam", "lock.unlocked", event_id)
    assert data["site"]["name"] == "Pier 4" and data["occurred_at"] == "2024-12-31T19:00:00-05:00"
    assert data["activity"]["action"] and data["payload"]["method"] == "keycode"
    assert data["url"] == f"https://portal.example.com/admin/events/event/{event_id}/change/"


def test_an_event_noticed_while_the_broker_is_down_is_sent_by_the_sweep(
    site, post, endpoint_for, monkeypatch, django_capture_on_commit_callbacks
):
    email_rule(event_types=["door.request.denied"])
    monkeypatch.setattr(tasks.fan_out_alarms, "delay", lambda *a: (_ for _ in ()).throw(ConnectionError("down")))
    event_id = post(endpoint_for("pdk"), fixture_bytes("pdk", "door.request.denied.json")).json()["event_id"]
    with django_capture_on_commit_callbacks(execute=True):
        assert processing.process(event_id) == "processed"
    assert not Notification.objects.exists()
    with django_capture_on_commit_callbacks(execute=False):
        notifications.send_due()  # beat's sweep
    assert Notification.objects.get().event_id == event_id


def test_event_types_a_rule_names_must_be_known_to_a_vendor(admin_client):
    response = admin_client.post(
        reverse("admin:subscriptions_notificationrule_add"),
        rule_form_data(alarm_kinds=[], event_types="door.request.denied, door.request.deneid"),
    )
    assert "Unknown event types: door.request.deneid" in " ".join(
        response.context["adminform"].form.errors["event_types"]
    )
    with pytest.raises(CommandError, match="Unknown event types: LockOpened"):
        run_command(
            "add", "--name", "Bad", "--channel", "email", "--to", "a@example.com", "--event-types", "LockOpened"
        )
    run_command("add", "--name", "Good", "--channel", "email", "--to", "a@example.com",
                "--event-types", "LockOpenRequested,lock.unlocked,door.request.denied")  # fmt: skip
    assert NotificationRule.objects.get().event_types == ["LockOpenRequested", "lock.unlocked", "door.request.denied"]


# --- quiet hours -------------------------------------------------------------------------------------


def test_quiet_hours_hold_back_major_alarms_but_critical_goes_through(site, deliver_pdk):
    # 22:00-07:00 Paris time every day; the clock is at 23:30 Paris on a Monday.
    email_rule(min_severity="minor", quiet_days=list(range(7)), quiet_start=time(22), quiet_end=time(7))
    notifications.clock.set(datetime(2024, 3, 4, 22, 30, tzinfo=UTC))
    deliver_pdk("door.alarm.propped.on", T0, "p-1")  # major: held back
    deliver_pdk("door.alarm.forced", T0, "f-1", door=2)  # critical: still goes through
    assert [m.subject.split(":")[0] for m in mail.outbox] == ["Critical"]
    skipped = Notification.objects.get(status="skipped")
    assert skipped.reason == "quiet hours" and skipped.alarm.kind == "door_propped"


def test_quiet_hours_can_hold_back_critical_too_and_end_in_the_morning(site, deliver_pdk):
    email_rule(
        min_severity="minor", quiet_days=[0], quiet_start=time(22), quiet_end=time(7), critical_in_quiet_hours=False
    )
    notifications.clock.set(datetime(2024, 3, 5, 5, 0, tzinfo=UTC))  # Tuesday 06:00 Paris: Monday night's quiet
    deliver_pdk("door.alarm.forced", T0, "f-1")
    assert mail.outbox == []
    notifications.clock.set(datetime(2024, 3, 5, 6, 30, tzinfo=UTC))  # 07:30 Paris: over
    deliver_pdk("door.alarm.forced", T0, "f-2", door=2)
    assert len(mail.outbox) == 1


def test_quiet_hours_use_the_site_timezone():
    rule = NotificationRule(quiet_days=[0], quiet_start=time(9), quiet_end=time(17))
    paris = Site(name="P", timezone="Europe/Paris")
    tokyo = Site(name="T", timezone="Asia/Tokyo")
    at = datetime(2024, 3, 4, 9, 30, tzinfo=UTC)  # Monday 10:30 Paris, 18:30 Tokyo
    assert notifications.in_quiet_hours(rule, paris, at)
    assert not notifications.in_quiet_hours(rule, tokyo, at)


# --- storm control -----------------------------------------------------------------------------------


def test_a_door_propped_on_and_off_50_times_in_10_minutes_notifies_once_per_window_with_the_count(site, deliver_pdk):
    email_rule(alarm_kinds=["door_propped"], notify_cleared=True)
    for i in range(50):
        deliver_pdk("door.alarm.propped.on", T0 + i * 11_000, f"on-{i}")
        notifications.clock.advance(timedelta(seconds=5))
        deliver_pdk("door.alarm.propped.off", T0 + i * 11_000 + 5_000, f"off-{i}")
        notifications.clock.advance(timedelta(seconds=6))
    assert Alarm.objects.filter(kind="door_propped").count() == 50
    assert len(mail.outbox) == 1  # the first raise; everything after it is counted, not sent
    summary = Notification.objects.get(change="storm")
    assert summary.status == "pending" and summary.coalesced.count() == 99  # 49 raises + 50 clears

    # The window ends (10 minutes after the first message): one summary with the count.
    notifications.clock.advance(timedelta(minutes=2))
    for pk in Notification.objects.filter(status="pending").values_list("pk", flat=True):
        notifications.deliver(pk)
    assert len(mail.outbox) == 2
    assert "99 more times" in mail.outbox[1].body and "Occurrences: 99" in mail.outbox[1].body
    assert "it is now cleared" in mail.outbox[1].body


def test_storm_control_is_per_door(site, deliver_pdk):
    email_rule(min_severity="minor")
    deliver_pdk("door.alarm.propped.on", T0, "d1-on")
    deliver_pdk("door.alarm.propped.on", T0, "d2-on", door=2)  # another door: its own window
    assert len(mail.outbox) == 2


def test_a_short_window_lets_every_flap_through(site, deliver_pdk, settings):
    settings.PORTAL_NOTIFY_STORM_WINDOW_SECONDS = 0
    email_rule(alarm_kinds=["door_propped"])
    for i in range(3):
        deliver_pdk("door.alarm.propped.on", T0 + i * 10_000, f"on-{i}")
        deliver_pdk("door.alarm.propped.off", T0 + i * 10_000 + 5_000, f"off-{i}")
    assert len(mail.outbox) == 3


# --- repeat until acknowledged -----------------------------------------------------------------------


def test_reminders_repeat_every_n_minutes_and_stop_at_acknowledgement(site, deliver_pdk):
    email_rule(alarm_kinds=["door_forced"], repeat_minutes=15)
    deliver_pdk("door.alarm.forced", T0, "f-1")
    assert len(mail.outbox) == 1

    def tick(minutes):
        notifications.clock.advance(timedelta(minutes=minutes))
        notifications.send_reminders()
        for pk in Notification.objects.filter(status="pending").values_list("pk", flat=True):
            notifications.deliver(pk)

    tick(10)
    assert len(mail.outbox) == 1  # not yet
    tick(6)
    assert len(mail.outbox) == 2 and mail.outbox[1].subject.startswith("Reminder")
    tick(15)
    assert len(mail.outbox) == 3
    domain.acknowledge_alarm(Alarm.objects.get(), User.objects.create_user("guard"), "on my way")
    tick(15)
    tick(15)
    assert len(mail.outbox) == 3
    assert list(Notification.objects.filter(change="reminder").values_list("occurrence", flat=True)) == [
        "reminder-2",
        "reminder-1",
    ]


def test_a_reminder_queued_before_the_acknowledgement_is_not_sent(site, deliver_pdk):
    email_rule(alarm_kinds=["door_forced"], repeat_minutes=5)
    deliver_pdk("door.alarm.forced", T0, "f-1")
    notifications.clock.advance(timedelta(minutes=6))
    notifications.send_reminders()
    domain.acknowledge_alarm(Alarm.objects.get(), User.objects.create_user("guard"))
    reminder = Notification.objects.get(change="reminder")
    assert notifications.deliver(reminder.pk) == "skipped"
    assert len(mail.outbox) == 1


# --- replays -----------------------------------------------------------------------------------------


def test_every_fixture_processed_twice_notifies_no_more_than_once(
    site, post, endpoint_for, announced, django_capture_on_commit_callbacks
):
    email_rule(name="all alarms", min_severity="minor", notify_cleared=True)
    with WebhookReceiver() as receiver:
        hook = NotificationRule(
            name="hook",
            channel="webhook",
            url=receiver.url,
            min_severity="minor",
            notify_cleared=True,
            event_types=sorted(sources.known_event_types()),  # and every other event
        )
        hook.secret = receiver.secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        hook.full_clean()
        hook.save()
        for vendor in ("pdk", "seam", "spk"):
            endpoint = endpoint_for(vendor)
            for path in fixture_files(vendor):
                with django_capture_on_commit_callbacks(execute=True):
                    answer = post(endpoint, path.read_bytes())
                    if answer.status_code == 200 and "event_id" in answer.json():
                        processing.process(answer.json()["event_id"])
        run_announced(announced)
        first = (len(mail.outbox), len(receiver.received), Notification.objects.count())
        assert first[0] > 0 and first[1] > 0
        assert Notification.objects.filter(event__source="spk").exists()  # events that raise no alarm too
        changes = AlarmChange.objects.count()

        # Everything again: every event replayed, every fan-out re-run.
        with django_capture_on_commit_callbacks(execute=True):
            processing.replay(Event.objects.all())
            for event_id in Event.objects.values_list("pk", flat=True):
                processing.process(event_id)
        assert AlarmChange.objects.count() == changes  # a replayed event changes no alarm
        AlarmChange.objects.update(fanned_out_at=None)  # and a fan-out run twice sends nothing new
        run_announced(announced)
        assert (len(mail.outbox), len(receiver.received), Notification.objects.count()) == first
        assert all(r.verified for r in receiver.received)


def test_a_broker_down_at_commit_delays_the_notification_but_loses_nothing(
    site, post, endpoint_for, monkeypatch, django_capture_on_commit_callbacks
):
    email_rule(alarm_kinds=["door_forced"])

    def broker_down(*args, **kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(tasks.fan_out_alarms, "delay", broker_down)
    event_id = post(endpoint_for("pdk"), fixture_bytes("pdk", "door.alarm.forced.json")).json()["event_id"]
    with django_capture_on_commit_callbacks(execute=True):
        assert processing.process(event_id) == "processed"  # the batch commits all the same
    assert AlarmChange.objects.filter(fanned_out_at__isnull=True).count() == 1
    assert not Notification.objects.exists()

    with django_capture_on_commit_callbacks(execute=False):
        notifications.send_due()  # beat's sweep, every few seconds, once the broker is back

    note = Notification.objects.get()
    assert (note.recipient, note.alarm.kind) == ("desk@example.com", "door_forced")
    assert not AlarmChange.objects.filter(fanned_out_at__isnull=True).exists()


def test_a_rule_has_no_more_webhook_sends_in_flight_than_it_may(settings, site, deliver_pdk, monkeypatch):
    """A slow receiver holds up its own rule's sends, a few at a time, and nothing else."""
    settings.PORTAL_NOTIFY_MAX_IN_FLIGHT_PER_RULE = 1
    again = []
    monkeypatch.setattr(notifications, "_try_again_soon", again.append)
    with WebhookReceiver() as receiver:
        rule = NotificationRule(name="hook", channel="webhook", url=receiver.url, alarm_kinds=["door_forced"])
        rule.secret = receiver.secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        rule.full_clean()
        rule.save()
        with monkeypatch.context() as fan_out_only:  # the test sends them itself
            fan_out_only.setattr(notifications, "deliver", lambda pk: None)
            deliver_pdk("door.alarm.forced", T0, "forced-1", door=1)
            deliver_pdk("door.alarm.forced", T0, "forced-2", door=2)
        first, second = Notification.objects.order_by("pk")
        now = notifications.clock.now()
        # The first is being sent by another worker, its lease still running.
        Notification.objects.filter(pk=first.pk).update(status="sending", next_attempt_at=now + timedelta(minutes=1))
        assert notifications.deliver(second.pk).startswith("waiting")
        assert again == [second.pk] and not receiver.received
        assert Notification.objects.get(pk=second.pk).status == "pending"
        # That worker died: once its lease has passed, the first is due again, and goes out first.
        notifications.clock.advance(timedelta(minutes=2))
        assert notifications.deliver(first.pk) == "sent"
        assert notifications.deliver(second.pk) == "sent"
        assert notifications.deliver(second.pk) == "not due"  # a task run twice sends once
    assert [got.payload["data"]["notification_id"] for got in receiver.received] == [first.pk, second.pk]
    assert all(got.verified for got in receiver.received)


def test_a_change_whose_fan_out_fails_stays_pending_and_holds_up_no_other(
    site, post, endpoint_for, announced, monkeypatch, django_capture_on_commit_callbacks, caplog
):
    email_rule(alarm_kinds=["door_forced"])
    for door in (1, 2, 3):
        payload = json.loads(fixture_bytes("pdk", "door.alarm.forced.json"))
        payload.update(id=f"forced-{door}")
        payload["body"]["doorId"] = door
        with django_capture_on_commit_callbacks(execute=True):
            processing.process(post(endpoint_for("pdk"), json.dumps(payload).encode()).json()["event_id"])
    broken = Alarm.objects.get(subject__endswith=":2")
    real_fan_out = notifications.fan_out

    def fan_out_with_a_bug(alarm_pk, *args, **kwargs):
        if alarm_pk == broken.pk:
            raise RuntimeError("a bug about this alarm")
        return real_fan_out(alarm_pk, *args, **kwargs)

    monkeypatch.setattr(notifications, "fan_out", fan_out_with_a_bug)
    with django_capture_on_commit_callbacks(execute=False):
        made = notifications.fan_out_pending()
    assert sorted(Notification.objects.values_list("alarm__subject", flat=True)) == [
        a.subject for a in Alarm.objects.exclude(pk=broken.pk).order_by("subject")
    ]
    assert len(made) == 2
    assert list(announced.values_list("alarm_id", flat=True)) == [broken.pk]  # still pending
    assert "could not fan out alarm change" in caplog.text
    monkeypatch.setattr(notifications, "fan_out", real_fan_out)  # the bug fixed: the next run tells it
    with django_capture_on_commit_callbacks(execute=False):
        assert len(notifications.fan_out_pending()) == 1
    assert Notification.objects.filter(alarm=broken).count() == 1 and not announced.exists()


def test_a_change_fanned_out_again_notifies_nobody_twice(site, deliver_pdk, announced, caplog):
    """The first pass does not look for notifications made before (a pending change has none); if
    one is there after all, the unique constraint sends the batch through the checked pass."""
    email_rule(alarm_kinds=["door_forced"])
    deliver_pdk("door.alarm.forced", T0, "forced-1", door=1)
    deliver_pdk("door.alarm.forced", T0, "forced-2", door=2)
    assert len(mail.outbox) == 2
    AlarmChange.objects.update(fanned_out_at=None)  # as if the marks were lost
    assert notifications.fan_out_pending() == []
    assert Notification.objects.count() == 2 and not announced.exists()
    assert "could not fan out" not in caplog.text

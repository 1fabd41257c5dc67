"""Notifications through a real Celery worker (in-process, on the Redis broker) and a controlled clock:
signed webhooks, retries on Svix's schedule, Retry-After, 410, dead letters, disabling after 5 days."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from django.contrib.auth.models import User
from django.core import mail
from django.db import connection

from events import processing
from portal import domain
from portal.celery import app
from portal.models import Site
from subscriptions import notifications, tasks
from subscriptions.models import Notification, NotificationRule, generate_webhook_secret
from tests.processes import wait_until
from tests.vendors import fixture_bytes
from tests.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def close_connection(**_):
    connection.close()


SCHEDULE = [5, 300, 1800, 7200, 18000, 36000, 36000]
T0 = 1_700_000_000_000


@pytest.fixture(autouse=True)
def environment(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.PORTAL_PUBLIC_URL = "https://portal.example.com"
    settings.PORTAL_NOTIFY_RETRY_SCHEDULE = SCHEDULE
    settings.PORTAL_NOTIFY_STORM_WINDOW_SECONDS = 600
    notifications.clock.set(datetime(2024, 3, 4, 12, 0, tzinfo=UTC))
    app.control.purge()
    # The worker thread's database connection is closed after each task, so nothing holds the test
    # database open once the test ends.
    task_postrun.connect(close_connection, weak=False)
    try:
        with start_worker(
            app,
            pool="solo",
            perform_ping_check=False,
            loglevel="WARNING",
            shutdown_timeout=15,
            queues=["celery", "notifications"],
        ):
            yield
    finally:
        task_postrun.disconnect(close_connection)
        app.control.purge()
    notifications.clock.reset()


@pytest.fixture
def receiver():
    with WebhookReceiver(generate_webhook_secret()) as receiver:
        yield receiver


@pytest.fixture
def owner():
    return User.objects.create_user("owner", email="owner@example.com")


@pytest.fixture
def hook_rule(receiver, owner):
    site = Site.objects.create(name="Harbour House", timezone="Europe/Paris")
    domain.place(domain.placement("pdk_panel", "1070000"), site)
    rule = NotificationRule(
        name="Ops hook", channel="webhook", url=receiver.url, secret=receiver.secret, owner=owner, min_severity="major"
    )
    rule.full_clean()
    rule.save()
    return rule


@pytest.fixture
def door_alarm(post, endpoint_for):
    """A PDK door alarm posted to the ingress and processed: its batch's commit announces it."""
    endpoint = endpoint_for("pdk")
    count = iter(range(1000))

    def _raise(topic="door.alarm.forced"):
        n = next(count)
        payload = json.loads(fixture_bytes("pdk", f"{topic}.json"))
        payload["id"] = f"alarm-{n}"
        payload["body"]["doorId"] = 100 + n  # a new door each time: no storm control
        payload["metadata"]["occurred"] = T0 + n * 1000
        event_id = post(endpoint, json.dumps(payload).encode()).json()["event_id"]
        assert processing.process(event_id) == "processed"

    return _raise


def test_an_event_the_rule_names_arrives_signed_through_the_worker(receiver, hook_rule, post, endpoint_for):
    hook_rule.event_types = ["door.request.denied"]
    hook_rule.save()
    event_id = post(endpoint_for("pdk"), fixture_bytes("pdk", "door.request.denied.json")).json()["event_id"]
    assert processing.process(event_id) == "processed"  # its commit publishes the fan-out
    wait_until(lambda: receiver.received, timeout=30, message="the webhook")
    got = receiver.received[0]
    assert got.verified, got.error
    assert got.payload["type"] == "event.received" and got.payload["data"]["event_id"] == event_id
    assert wait_for_attempts(1).status == "sent"


def attempts_of(note: Notification) -> list:
    return list(note.attempt_set.order_by("number"))


def wait_for_attempts(count: int, note_filter: dict | None = None) -> Notification:
    def done():
        return (
            Notification.objects.filter(attempts__gte=count, **(note_filter or {})).exclude(status="sending").exists()
        )

    wait_until(done, timeout=30, message=f"{count} attempt(s)")
    return Notification.objects.filter(**(note_filter or {})).get()


def sweep_after(seconds: float) -> None:
    notifications.clock.advance(timedelta(seconds=seconds))
    tasks.send_due_notifications.delay()


def test_door_alarm_arrives_signed_per_standard_webhooks(receiver, hook_rule, door_alarm):
    door_alarm()
    wait_until(lambda: receiver.received, timeout=30, message="the webhook")
    got = receiver.received[0]
    assert got.verified, got.error
    assert set(got.payload) == {"type", "timestamp", "data"} and got.payload["type"] == "alarm.raised"
    data = got.payload["data"]
    assert (data["kind"], data["severity"], data["site"]["name"], data["occurrences"]) == (
        "door_forced",
        "critical",
        "Harbour House",
        1,
    )
    assert got.headers["webhook-id"].startswith("msg_") and got.headers["webhook-signature"].startswith("v1,")
    note = wait_for_attempts(1)
    assert note.status == "sent" and note.message_id == got.headers["webhook-id"]
    attempt = note.attempt_set.get()
    assert attempt.status_code == 200 and attempt.succeeded and '"verified": true' in attempt.response
    hook_rule.refresh_from_db()
    assert hook_rule.webhook_last_success_at is not None


def test_failures_are_retried_on_the_schedule_then_dead_with_every_attempt_kept(receiver, hook_rule, door_alarm):
    receiver.answer(500, times=20)
    door_alarm()
    note = wait_for_attempts(1)
    assert note.status == "retrying"
    for number, delay in enumerate(SCHEDULE, start=2):
        sweep_after(delay - 1)
        note.refresh_from_db()
        assert note.attempts == number - 1  # not due yet: the sweep sends nothing early
        sweep_after(1)
        note = wait_for_attempts(number)
    assert note.status == "dead" and note.next_attempt_at is None and "gave up after 8 tries" in note.reason
    tries = attempts_of(note)
    assert [a.status_code for a in tries] == [500] * 8 and all('"ok": false' in a.response for a in tries)
    gaps = [(later.at - earlier.at).total_seconds() for earlier, later in zip(tries, tries[1:], strict=False)]
    assert gaps == SCHEDULE
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1  # one message, tried 8 times
    assert all(r.verified for r in receiver.received)

    # "Resend all dead for this rule" after the receiver is fixed.
    receiver.answers.clear()
    notifications.resend(Notification.objects.filter(rule=hook_rule, status="dead"))
    wait_until(lambda: Notification.objects.filter(status="sent").exists(), timeout=30, message="the resend")


def test_retry_after_is_honoured_on_429_and_503(receiver, hook_rule, door_alarm):
    receiver.answer(429, {"Retry-After": "120"})
    receiver.answer(503, {"Retry-After": "2"})
    door_alarm()
    note = wait_for_attempts(1)
    assert (note.next_attempt_at - attempts_of(note)[0].at).total_seconds() == 120  # not the schedule's 5 s
    sweep_after(119)
    sweep_after(1)
    note = wait_for_attempts(2)
    # Retry-After shorter than the schedule: the schedule's 5 minutes still apply.
    assert (note.next_attempt_at - attempts_of(note)[1].at).total_seconds() == 300
    sweep_after(300)
    note = wait_for_attempts(3)
    assert note.status == "sent" and [a.status_code for a in attempts_of(note)] == [429, 503, 200]


def test_410_disables_the_webhook_and_tells_the_owner(receiver, hook_rule, door_alarm):
    receiver.answer(410)
    door_alarm()
    note = wait_for_attempts(1)
    assert note.status == "dead" and "410" in note.reason
    hook_rule.refresh_from_db()
    assert hook_rule.webhook_disabled_at is not None and "410" in hook_rule.webhook_disabled_reason
    assert [m.to for m in mail.outbox] == [["owner@example.com"]] and "Ops hook" in mail.outbox[0].subject
    door_alarm()  # while disabled: no notification at all
    tasks.send_due_notifications.delay()
    wait_until(lambda: Notification.objects.count() == 1 and len(receiver.received) == 1, message="nothing more")


def test_a_webhook_failing_for_5_days_without_success_is_disabled(receiver, hook_rule, door_alarm):
    receiver.answer(500, times=100)
    door_alarm()
    wait_for_attempts(1)
    notifications.clock.advance(timedelta(days=3))
    door_alarm()
    wait_until(lambda: Notification.objects.filter(attempts=1).count() == 2, timeout=30, message="second alarm")
    hook_rule.refresh_from_db()
    assert hook_rule.webhook_disabled_at is None
    notifications.clock.advance(timedelta(days=2, seconds=1))
    door_alarm()
    wait_until(lambda: NotificationRule.objects.filter(webhook_disabled_at__isnull=False).exists(), timeout=30)
    latest = Notification.objects.order_by("-pk").first()
    wait_until(lambda: Notification.objects.get(pk=latest.pk).status == "dead", timeout=30)
    assert "5 days" in NotificationRule.objects.get().webhook_disabled_reason
    assert [m.to for m in mail.outbox] == [["owner@example.com"]]
    # The earlier notifications, still retrying, go dead at their next try instead of being sent.
    sweep_after(36000)
    wait_until(lambda: set(Notification.objects.values_list("status", flat=True)) == {"dead"}, timeout=30)


def test_a_slow_receiver_times_out_and_a_redirect_is_not_followed(receiver, hook_rule, door_alarm, settings):
    settings.PORTAL_NOTIFY_WEBHOOK_TIMEOUT_SECONDS = 1
    receiver.answer(200, delay=3)
    receiver.answer(302, {"Location": "http://127.0.0.1:9/elsewhere"})
    door_alarm()
    note = wait_for_attempts(1)
    first = attempts_of(note)[0]
    assert first.status_code is None and "Timeout" in first.error and 900 <= first.duration_ms < 3000
    sweep_after(5)
    note = wait_for_attempts(2)
    assert attempts_of(note)[1].status_code == 302 and note.status == "retrying"
    assert len(receiver.received) == 2  # nothing followed the Location


def test_email_rule_through_the_worker(hook_rule, door_alarm):
    NotificationRule.objects.create(
        name="Desk", channel="email", emails=["desk@example.com"], alarm_kinds=["door_forced"]
    )
    door_alarm()
    wait_until(lambda: any(m.to == ["desk@example.com"] for m in mail.outbox), timeout=30, message="the email")
    assert Notification.objects.get(channel="email").status == "sent"

"""Stored events reach a worker and end processed, failed or unhandled: once, and replayably."""

import io
import json
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from events import processing
from events.models import Event
from events.sources import pdk
from events.tasks import process_events
from portal.models import Activity, Alarm, Lock
from tests.helpers import http_post, make_endpoint
from tests.processes import celery_worker, dispatcher, free_port, port_open, process_env, redis_server, wait_until
from tests.vendors import SIGNERS, fixture_bytes, fixture_files, with_changes


def undocumented_topic(topic: str) -> bytes:
    """A PDK event of a topic PDK may add one day: no handler knows it yet."""
    payload = json.loads(fixture_bytes("pdk", "notification.intercom.created.json"))
    return json.dumps({**payload, "topic": topic}).encode()


UNMAPPED_PDK_TOPIC = undocumented_topic("notification.intercom.renamed")


def store(post, endpoint, name="door.request.allowed.json", vendor="pdk") -> Event:
    response = post(endpoint, name if isinstance(name, bytes) else fixture_bytes(vendor, name))
    assert response.status_code == 200
    return Event.objects.get(pk=response.json()["event_id"])


@pytest.fixture
def pdk_handlers(monkeypatch):
    """Install handlers in PDK's table for one test (the building model fills it for real)."""

    def install(**handlers):
        for topic, handler in handlers.items():
            monkeypatch.setitem(pdk.HANDLERS, topic.replace("_", "."), handler)

    return install


@pytest.mark.django_db
class TestProcessing:
    def test_event_without_handler_ends_unhandled_and_says_why(self, post, endpoint_for):
        event = store(post, endpoint_for("pdk"), UNMAPPED_PDK_TOPIC)
        assert processing.process(event.pk) == "unhandled"
        event.refresh_from_db()
        assert (event.status, event.attempts) == ("unhandled", 1)
        assert "notification.intercom.renamed" in event.last_error

    def test_handler_runs_once_and_event_ends_processed(self, post, endpoint_for, pdk_handlers):
        seen = []
        pdk_handlers(door_request_allowed=lambda event: seen.append(event.pk))
        event = store(post, endpoint_for("pdk"))

        processing.process(event.pk)
        processing.process(event.pk)  # a redelivered task message

        event.refresh_from_db()
        assert (event.status, event.attempts, seen) == ("processed", 1, [event.pk])
        assert event.processed_at is not None

    def test_handler_error_marks_event_failed_with_the_reason(self, post, endpoint_for, pdk_handlers):
        def broken(event):
            raise ValueError("door 1 is not on panel 1070000")

        pdk_handlers(door_request_allowed=broken)
        event = store(post, endpoint_for("pdk"))

        assert processing.process(event.pk) == "failed"
        event.refresh_from_db()
        assert event.last_error == "ValueError: door 1 is not on panel 1070000"

    def test_a_failing_event_fails_alone_in_its_batch(self, post, endpoint_for, pdk_handlers):
        def broken_after_writing(event):
            Activity.objects.create(event=event, occurred_at=timezone.now(), action="half-done")
            raise ValueError("the handler broke halfway")

        pdk_handlers(door_request_denied=broken_after_writing)
        endpoint = endpoint_for("pdk")
        batch = [store(post, endpoint, f"door.request.{result}.json") for result in ("allowed", "denied", "unknown")]

        outcome = processing.process_batch([event.pk for event in batch])

        assert list(outcome.values()) == ["processed", "failed", "processed"]
        assert Activity.objects.filter(event__in=[batch[0], batch[2]]).count() == 2
        assert not Activity.objects.filter(event=batch[1]).exists()  # its half-done work rolled back
        assert Event.objects.get(pk=batch[1].pk).last_error == "ValueError: the handler broke halfway"

    def test_ignored_type_ends_processed(self, post, endpoint_for, monkeypatch):
        monkeypatch.setitem(pdk.IGNORED, "door.request.allowed", "for this test")
        event = store(post, endpoint_for("pdk"))
        assert processing.process(event.pk) == "processed"

    def test_missing_event_is_nothing_to_do(self):
        assert processing.process(987654321) is None

    def test_replay_command_makes_failed_and_unhandled_events_pending_again(self, post, endpoint_for):
        endpoint = endpoint_for("pdk")
        unhandled = store(post, endpoint, UNMAPPED_PDK_TOPIC)
        processing.process(unhandled.pk)
        other = store(post, endpoint, undocumented_topic("notification.intercom.moved"))
        processing.process(other.pk)

        call_command("replay_events", "--unhandled", "--type", "notification.intercom.moved")

        unhandled.refresh_from_db()
        other.refresh_from_db()
        assert unhandled.status == "unhandled"
        assert other.status == "pending" and other.last_error == ""
        assert processing.process(other.pk) == "unhandled"
        other.refresh_from_db()
        assert other.attempts == 2

    def test_requeue_publishes_what_nobody_published_and_what_never_ran(self, post, endpoint_for, monkeypatch):
        monkeypatch.setattr(processing, "broker_queue_length", lambda: 40)  # a backlog is queued
        endpoint = endpoint_for("pdk")
        names = ["door.request.allowed", "door.request.denied", "door.request.unknown", "door.request.found"]
        fresh, unpublished, queued, lost = (store(post, endpoint, f"{n}.json") for n in names)
        done = store(post, endpoint, "door.request.duress.json")
        now = timezone.now()
        Event.objects.filter(pk=unpublished.pk).update(received_at=now - timedelta(minutes=5))
        Event.objects.filter(pk=queued.pk).update(enqueued_at=now - timedelta(minutes=5))  # waiting in a backlog
        Event.objects.filter(pk__in=[lost.pk, done.pk]).update(enqueued_at=now - timedelta(hours=1))
        processing.process(done.pk)

        assert processing.requeue_stale(timedelta(minutes=1), timedelta(minutes=15)) == 2

        enqueued = dict(Event.objects.values_list("pk", "enqueued_at"))
        assert enqueued[fresh.pk] is None
        assert enqueued[unpublished.pk] > now and enqueued[lost.pk] > now
        assert enqueued[queued.pk] < now and enqueued[done.pk] < now

    def test_with_the_queue_empty_a_task_published_a_minute_ago_is_published_again(
        self, post, endpoint_for, monkeypatch
    ):
        monkeypatch.setattr(processing, "broker_queue_length", lambda: 0)  # Redis came back without its data
        endpoint = endpoint_for("pdk")
        lost, recent = (store(post, endpoint, f"door.request.{n}.json") for n in ("allowed", "denied"))
        now = timezone.now()
        Event.objects.filter(pk=lost.pk).update(enqueued_at=now - timedelta(minutes=5))
        Event.objects.filter(pk=recent.pk).update(enqueued_at=now - timedelta(seconds=10))

        assert processing.requeue_stale(timedelta(minutes=1), timedelta(minutes=15)) == 1
        assert Event.objects.get(pk=lost.pk).enqueued_at > now

    def test_database_hiccup_in_a_handler_leaves_the_event_pending_for_a_retry(self, post, endpoint_for, pdk_handlers):
        from django.db import OperationalError

        def flaky(event):
            raise OperationalError("server closed the connection unexpectedly")

        pdk_handlers(door_request_allowed=flaky)
        event = store(post, endpoint_for("pdk"))

        with pytest.raises(OperationalError):
            processing.process(event.pk)
        processing.note_transient_failure([event.pk], OperationalError("server closed"), final=False)
        event.refresh_from_db()
        assert (event.status, event.attempts) == ("pending", 1)
        assert "server closed" in event.last_error

        processing.note_transient_failure([event.pk], OperationalError("still closed"), final=True)
        event.refresh_from_db()
        assert (event.status, event.attempts) == ("failed", 2)

    def test_replay_failed_events(self, post, endpoint_for, pdk_handlers):
        def broken(event):
            raise ValueError("bad door")

        pdk_handlers(door_request_allowed=broken)
        event = store(post, endpoint_for("pdk"))
        processing.process(event.pk)

        call_command("replay_events", "--failed", stdout=io.StringIO())

        event.refresh_from_db()
        assert (event.status, event.last_error, event.enqueued_at) == ("pending", "", None)


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_of_one_event_run_its_handler_once(post, endpoint_for, pdk_handlers):
    import threading

    from django.db import connection

    seen = []
    pdk_handlers(door_request_allowed=lambda event: seen.append(event.pk) or time.sleep(0.3))
    event = store(post, endpoint_for("pdk"))
    barrier = threading.Barrier(2)

    def run():
        barrier.wait()
        try:
            processing.process(event.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [event.pk]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_committed_events_reach_a_real_worker(live_server):
    """The whole path with real processes: ingress → dispatcher → Redis → Celery worker."""
    endpoint = make_endpoint("seam")
    env = process_env()
    with celery_worker(env), dispatcher(env):
        ids = []
        for path in fixture_files("seam"):
            body = path.read_bytes()
            status, answer = http_post(live_server.url, endpoint.path, body, SIGNERS["seam"](body))
            assert status == 200
            ids.append(answer["event_id"])
        events = Event.objects.filter(pk__in=ids)
        wait_until(lambda: not events.filter(status="pending").exists(), message="events to be processed")
    assert set(events.values_list("status", "attempts")) == {("processed", 1)}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_broker_outage_loses_nothing_and_processes_each_event_once(live_server):
    """Redis stops while events arrive: every request is still a 2xx, and each event runs once it is back."""
    port = free_port()
    env = process_env(broker_url=f"redis://127.0.0.1:{port}/0")
    endpoint = make_endpoint("pdk")
    body = fixture_bytes("pdk", "door.request.allowed.json")

    def deliver(prefix, n):
        sent = []
        for i in range(n):
            variant = with_changes(body, id=f"{prefix}-{i}")
            status, answer = http_post(live_server.url, endpoint.path, variant, SIGNERS["pdk"](variant))
            assert status == 200, answer
            sent.append(answer["event_id"])
        return sent

    with celery_worker(env), dispatcher(env):
        with redis_server(port, "redis-before-outage"):
            wait_until(lambda: port_open(port), message="redis to start")
            before = deliver("before", 5)
            wait_until(lambda: not Event.objects.filter(status="pending").exists(), message="first batch")
        # Redis is down now: the ingress must not care.
        during = deliver("during", 20)
        assert Event.objects.filter(pk__in=during, status="pending", enqueued_at__isnull=True).count() == 20
        with redis_server(port, "redis-after-outage"):
            wait_until(
                lambda: not Event.objects.filter(status="pending").exists(), timeout=60, message="backlog to drain"
            )

    assert len(set(before + during)) == 25
    assert set(Event.objects.values_list("status", "attempts")) == {("processed", 1)}
    assert Activity.objects.count() == 25  # each door request recorded once


@pytest.mark.django_db
class TestSpkSchemaValidation:
    """SPK's detail.data is held to SPK's published JSON Schemas before any handler runs."""

    @pytest.mark.parametrize("path", fixture_files("spk"), ids=lambda p: p.name)
    def test_documented_samples_are_valid(self, path):
        from events.sources import spk

        payload = json.loads(path.read_bytes())
        assert spk.validate(payload["detail-type"], payload) is None

    def test_invalid_payload_ends_failed_with_the_schema_message(self, post, endpoint_for):
        envelope = json.loads(fixture_bytes("spk", "KeyAdded.json"))
        envelope["detail"]["data"]["keyIndexNumber"] = "three"
        response = post(endpoint_for("spk"), json.dumps(envelope).encode())

        assert processing.process(response.json()["event_id"]) == "failed"
        event = Event.objects.get(pk=response.json()["event_id"])
        assert event.last_error.startswith("invalid payload: detail.data['keyIndexNumber']")

    def test_missing_required_field_is_named(self, post, endpoint_for):
        envelope = json.loads(fixture_bytes("spk", "ResidentAdded.json"))
        del envelope["detail"]["data"]["userId"]
        event_id = post(endpoint_for("spk"), json.dumps(envelope).encode()).json()["event_id"]

        processing.process(event_id)

        assert "'userId' is a required property" in Event.objects.get(pk=event_id).last_error

    def test_documented_nulls_are_accepted(self, post, endpoint_for):
        envelope = json.loads(fixture_bytes("spk", "ResidentAdded.json"))
        envelope["detail"]["data"]["email"] = None  # the catalog says "string|null"
        event_id = post(endpoint_for("spk"), json.dumps(envelope).encode()).json()["event_id"]
        assert processing.process(event_id) == "processed"

    def test_type_outside_every_catalog_is_unhandled_not_an_error(self, post, endpoint_for):
        envelope = json.loads(fixture_bytes("spk", "KeyAdded.json"))
        envelope["detail-type"] = "SomethingNew"
        event_id = post(endpoint_for("spk"), json.dumps(envelope).encode()).json()["event_id"]
        assert processing.process(event_id) == "unhandled"


# The statements one event costs once its door, panel and person exist (the usual case), whatever
# the batch size: benchmarks/bench_process.py prints the same figure per event type.
STATEMENTS_PER_DOOR_REQUEST = 5  # panel, door (row lock), person, activity, door's last activity
STATEMENTS_PER_TASK = 5  # begin, lock the events, record their outcome, the event types rules name, commit
# A door alarm raised: panel, door (row lock), the replay check, the alarm it counts on (a cleared
# episode or the open one), the alarm inserted or counted, the occurrence, the change for the rules.
STATEMENTS_PER_DOOR_ALARM = 7
# A door seen first adds the look-up of its former ids and its insert in a savepoint (3); it is
# created named, so no rename follows.
STATEMENTS_PER_NEW_DOOR_ALARM = STATEMENTS_PER_DOOR_ALARM + 4


@pytest.mark.django_db
@pytest.mark.parametrize("batch", [1, 20])
def test_queries_per_event_are_bounded_and_do_not_grow_with_the_batch(post, endpoint_for, batch):
    endpoint = endpoint_for("pdk")
    template = json.loads(fixture_bytes("pdk", "door.request.allowed.json"))

    def door_request(n: int) -> int:
        payload = {**template, "id": f"req-{n}", "metadata": {**template["metadata"], "occurred": 1700000000000 + n}}
        return post(endpoint, json.dumps(payload).encode()).json()["event_id"]

    processing.process(door_request(0))  # first sight of the panel, the door and the person
    ids = [door_request(n) for n in range(1, batch + 1)]

    with CaptureQueriesContext(connection) as queries:
        outcome = processing.process_batch(ids)

    assert set(outcome.values()) == {"processed"}
    assert len(queries) <= STATEMENTS_PER_TASK + STATEMENTS_PER_DOOR_REQUEST * batch


@pytest.mark.django_db
@pytest.mark.parametrize("topic", ["door.alarm.forced", "door.alarm.propped.on"])
def test_queries_per_door_alarm_on_a_new_door_and_on_a_known_one(post, endpoint_for, topic):
    endpoint = endpoint_for("pdk")

    def door_event(topic: str, door: int, n: int) -> int:
        payload = json.loads(fixture_bytes("pdk", f"{topic}.json"))
        payload |= {"id": f"{topic}-{door}-{n}", "body": {**payload["body"], "doorId": door}}
        payload["metadata"] = {**payload["metadata"], "occurred": 1700000000000 + n}
        return post(endpoint, json.dumps(payload).encode()).json()["event_id"]

    processing.process(door_event("door.request.allowed", 2, 0))  # the panel and door 2 are known
    expected = {
        "new door": (door_event(topic, 1, 1), STATEMENTS_PER_NEW_DOOR_ALARM),
        "known door": (door_event(topic, 2, 2), STATEMENTS_PER_DOOR_ALARM),
        "known door, repeat": (door_event(topic, 2, 3), STATEMENTS_PER_DOOR_ALARM),
    }
    counted = {}
    for case, (event_id, _) in expected.items():
        with CaptureQueriesContext(connection) as queries:
            assert processing.process_batch([event_id]) == {event_id: "processed"}
        counted[case] = len(queries)

    assert counted == {case: STATEMENTS_PER_TASK + statements for case, (_, statements) in expected.items()}
    door = Lock.objects.get(external_id="1070000:1")
    assert (door.name, door.details["name_reported"]["name"]) == ("Door Name", "Door Name")
    alarms = Alarm.objects.order_by("lock__external_id").values_list("lock__external_id", "state", "occurrences")
    assert list(alarms) == [("1070000:1", "active", 1), ("1070000:2", "active", 2)]


@pytest.mark.slow
def test_an_empty_queue_is_measured_as_empty_and_a_full_one_as_full():
    port = free_port()
    with redis_server(port, "redis-queue-length"):
        wait_until(lambda: port_open(port), message="redis to start")
        url = f"redis://127.0.0.1:{port}/0"
        with process_events.app.connection_for_write(url) as connection:
            assert processing.broker_queue_length(connection=connection) == 0  # Redis keeps no empty list
            process_events.apply_async(([1],), connection=connection)
            assert processing.broker_queue_length(connection=connection) == 1

"""Fault drills: real processes stopped, killed and cut off mid-stream; the database counts say nothing was lost.

Each drill starts its own gunicorn, dispatcher, Celery workers and (where it stops one) its own
redis-server on free ports of 127.0.0.1, and restores what it broke.
"""

import base64
import contextlib
import json
import os
import secrets
import select
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings

from events.models import Delivery, Event
from portal.models import Activity, Alarm, AlarmChange
from subscriptions.models import Notification, NotificationRule
from tests import processes
from tests.helpers import http_post, make_endpoint
from tests.processes import (
    answers_ping,
    beat,
    celery_worker,
    dispatcher,
    free_port,
    gunicorn,
    notifier,
    port_open,
    process_env,
    redis_server,
    wait_until,
)
from tests.vendors import SIGNERS, fixture_bytes
from tests.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def door_event(kind: str, n: int, **body) -> bytes:
    """A PDK door event of its own: a new id, a door of its own, a later time."""
    payload = json.loads(fixture_bytes("pdk", f"{kind}.json"))
    payload["id"] = f"drill-{kind}-{n}"
    payload["metadata"]["occurred"] = 1_700_000_000_000 + n
    payload["body"] = {**payload["body"], "doorId": n, **body}
    return json.dumps(payload).encode()


def post_all(base_url: str, path: str, bodies: list[bytes], threads: int = 8) -> list[tuple[int, dict]]:
    def send(body):
        return http_post(base_url, path, body, SIGNERS["pdk"](body), timeout=30)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(send, bodies))


@contextlib.contextmanager
def web(env: dict, workers: int = 4):
    port = free_port()
    with gunicorn(port, env, "gunicorn-drill", workers=workers) as proc:
        wait_until(lambda: port_open(port), message="gunicorn to listen")
        yield f"http://127.0.0.1:{port}", proc


def drained(ids, timeout=120):
    events = Event.objects.filter(pk__in=ids)
    wait_until(lambda: not events.filter(status="pending").exists(), timeout=timeout, message="the backlog to drain")
    return events


# 1. Redis stopped in the middle of a 1,000-event burst -----------------------------------------------


def test_redis_stopped_mid_burst_loses_nothing_and_processes_everything_once():
    redis_port = free_port()
    # Beat looks every second; a published task that is in no queue a few seconds later is published again.
    env = process_env(
        broker_url=f"redis://127.0.0.1:{redis_port}/0",
        PORTAL_REQUEUE_AFTER_SECONDS="3",
        PORTAL_REQUEUE_EVERY_SECONDS="1",
    )
    endpoint = make_endpoint("pdk")
    bodies = [door_event("door.request.allowed", n) for n in range(1000)]
    outage = threading.Event()

    with contextlib.ExitStack() as running_now:
        redis = running_now.enter_context(redis_server(redis_port, "redis-drill"))
        wait_until(lambda: port_open(redis_port), message="redis to start")
        url, _ = running_now.enter_context(web(env))
        worker = running_now.enter_context(celery_worker(env, name="burst-worker", concurrency=2))
        running_now.enter_context(dispatcher(env, name="burst-dispatcher"))
        running_now.enter_context(beat(env, name="burst-beat"))

        def stop_redis_midway():
            wait_until(lambda: Event.objects.count() >= 300, timeout=60, message="the burst to be under way")
            redis.terminate()  # Redis is gone mid-burst, with the queue it held
            redis.wait(10)
            outage.set()

        stopper = threading.Thread(target=stop_redis_midway)
        stopper.start()
        answers = post_all(url, endpoint.path, bodies)
        stopper.join()
        assert outage.is_set()
        assert {status for status, _ in answers} == {200}, "every request answered 2xx while Redis was down"
        assert Event.objects.count() == 1000
        assert Event.objects.filter(status="pending").exists()  # the outage left work waiting

        running_now.enter_context(redis_server(redis_port, "redis-drill-back"))
        wait_until(lambda: port_open(redis_port), message="redis to come back")
        # What a supervisor's liveness probe does: a worker that lost Redis in the middle of a task
        # can hang in kombu's reconnection (celery/celery#10205); one that answers no ping is restarted.
        if not any(answers_ping(env, "burst-worker") for _ in range(3)):
            _kill_tree(worker.pid)
            worker.wait(10)
            running_now.enter_context(celery_worker(env, name="burst-worker-restarted", concurrency=2))
        events = drained([answer["event_id"] for _, answer in answers])

    assert set(events.values_list("status", "attempts")) == {("processed", 1)}, "each event processed once"
    assert Activity.objects.count() == 1000 and Delivery.objects.count() == 1000


# 2. A worker killed with SIGKILL while processing ------------------------------------------------------


def test_a_worker_killed_mid_batch_leaves_its_events_to_another_worker_without_duplicates():
    redis_port = free_port()
    env = process_env(
        broker_url=f"redis://127.0.0.1:{redis_port}/0",
        CELERY_VISIBILITY_TIMEOUT="5",  # a killed worker's unacknowledged tasks come back after 5 s
        CELERY_WORKER_PREFETCH_MULTIPLIER="1",
    )
    endpoint = make_endpoint("pdk")
    rule = NotificationRule(name="desk", channel="email", emails=["desk@example.com"], alarm_kinds=["door_forced"])
    rule.full_clean()
    rule.save()
    kinds = ["door.request.allowed"] * 4 + ["door.alarm.forced"]
    bodies = [door_event(kinds[n % len(kinds)], n) for n in range(1500)]

    with redis_server(redis_port, "redis-kill-drill"), web(env) as (url, _):
        wait_until(lambda: port_open(redis_port), message="redis to start")
        answers = post_all(url, endpoint.path, bodies)
        ids = [answer["event_id"] for _, answer in answers]
        with dispatcher(env):
            with celery_worker(env, name="doomed", concurrency=1) as doomed:
                processed = Event.objects.filter(pk__in=ids, status="processed")
                wait_until(lambda: processed.count() >= 100, timeout=60, message="the first worker to be busy")
                _kill_tree(doomed.pid)
                doomed.wait(10)
            assert Event.objects.filter(pk__in=ids, status="pending").exists(), "killed with work in hand"
            with celery_worker(env, name="survivor", concurrency=2):
                events = drained(ids, timeout=180)
                # Notifications come after processing: the last batches' fan-outs may still be running.
                unannounced = AlarmChange.objects.filter(fanned_out_at__isnull=True)
                wait_until(lambda: not unannounced.exists(), timeout=60, message="the fan-outs")

    assert set(events.values_list("status", flat=True)) == {"processed"}
    alarms = Alarm.objects.filter(kind="door_forced")
    assert Activity.objects.count() == 1200  # each door request recorded once
    assert alarms.count() == 300 and set(alarms.values_list("occurrences", flat=True)) == {1}
    assert Notification.objects.filter(rule=rule).count() == 300  # one per alarm, none twice


def _kill_tree(pid: int) -> None:
    """SIGKILL a prefork worker and its pool children: nothing gets to clean up."""
    children = []
    with contextlib.suppress(FileNotFoundError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                children += [int(child) for child in listing.read().split()]
    for victim in [pid, *children]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


# 3. PostgreSQL unreachable -----------------------------------------------------------------------------


class TcpCut:
    """A TCP relay in front of PostgreSQL that the drill can cut (every connection dropped, new ones
    refused) and restore, without touching the server the rest of the suite uses."""

    def __init__(self, target_port: int):
        self.target_port, self.port = target_port, free_port()
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.lock = threading.Lock()

    def restore(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(64)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def cut(self):
        with self.lock:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            self.listener.close()
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
            self.sockets.clear()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if listener.fileno() == -1:  # cut while this connection was being accepted
                client.close()
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket):
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (b if sock is a else a).sendall(data)
        except OSError:
            return


def test_postgresql_unreachable_is_a_quick_503_and_service_resumes_without_a_restart():
    db = settings.DATABASES["default"]
    relay = TcpCut(int(db["PORT"] or 5432))
    relay.restore()
    env = process_env(
        DATABASE_URL=processes.test_database_url().replace(f":{db['PORT'] or 5432}/", f":{relay.port}/"),
        PORTAL_ENDPOINT_CACHE_SECONDS="0",
    )
    endpoint = make_endpoint("pdk")
    with web(env, workers=2) as (url, proc):
        before = [
            status
            for status, _ in post_all(url, endpoint.path, [door_event("door.request.allowed", n) for n in range(20)])
        ]
        assert set(before) == {200}

        relay.cut()
        timings = []
        for n in range(100, 120):
            body = door_event("door.request.allowed", n)
            started = time.monotonic()
            status, answer = http_post(url, endpoint.path, body, SIGNERS["pdk"](body))
            timings.append(time.monotonic() - started)
            assert status == 503, answer  # never a 2xx for what could not be stored
            assert answer["error"] == "database_unavailable"
        assert max(timings) < 1.0, f"503s took up to {max(timings):.2f} s"

        relay.restore()
        pid = proc.pid
        after = [
            status
            for status, _ in post_all(
                url, endpoint.path, [door_event("door.request.allowed", n) for n in range(200, 220)]
            )
        ]
        assert set(after) == {200} and proc.pid == pid and proc.poll() is None  # the same server, not restarted

    assert Event.objects.count() == 40  # the 20 refused during the outage were not stored: the vendor retries them


# 4. A duplicate storm -----------------------------------------------------------------------------------


def test_a_duplicate_storm_stores_each_event_once_and_notifies_once_per_alarm():
    redis_port = free_port()
    env = process_env(broker_url=f"redis://127.0.0.1:{redis_port}/0")
    endpoint = make_endpoint("pdk")
    rule = NotificationRule(name="desk", channel="email", emails=["desk@example.com"], alarm_kinds=["door_forced"])
    rule.full_clean()
    rule.save()
    bodies = [door_event("door.alarm.forced", n) for n in range(200)]

    with redis_server(redis_port, "redis-storm"), web(env) as (url, _):
        wait_until(lambda: port_open(redis_port), message="redis to start")
        with celery_worker(env, concurrency=2), dispatcher(env):
            answers = post_all(url, endpoint.path, [body for body in bodies for _ in range(5)], threads=16)
            assert {status for status, _ in answers} == {200}
            ids = {answer["event_id"] for _, answer in answers}
            drained(ids)
            wait_until(lambda: Notification.objects.count() >= 200, timeout=60, message="the notifications")
            time.sleep(2)  # anything extra would show up by now

    assert len(ids) == 200 and Event.objects.count() == 200 and Delivery.objects.count() == 1000
    assert sum(answer["duplicate"] for _, answer in answers) == 800
    assert Alarm.objects.filter(kind="door_forced", state="active").count() == 200
    assert Notification.objects.filter(rule=rule).count() == 200
    assert Notification.objects.values("alarm").distinct().count() == 200


# 5. A notification receiver that takes 10 s per request --------------------------------------------------


def test_a_slow_webhook_receiver_slows_neither_ingestion_nor_other_rules():
    redis_port = free_port()
    env = process_env(broker_url=f"redis://127.0.0.1:{redis_port}/0", PORTAL_NOTIFY_SWEEP_SECONDS="1")
    endpoint = make_endpoint("pdk")
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    with WebhookReceiver(secret) as slow, WebhookReceiver(secret) as fast:
        slow.answer(200, delay=10, times=100)  # ten seconds per request, every request
        for name, receiver in (("slow", slow), ("fast", fast)):
            rule = NotificationRule(name=name, channel="webhook", url=receiver.url, alarm_kinds=["door_forced"])
            rule.secret = secret
            rule.full_clean()
            rule.save()
        with redis_server(redis_port, "redis-slow"), web(env) as (url, _):
            wait_until(lambda: port_open(redis_port), message="redis to start")
            with celery_worker(env, concurrency=2, queues="celery"), notifier(env), dispatcher(env):
                started = time.monotonic()
                answers = post_all(url, endpoint.path, [door_event("door.alarm.forced", n) for n in range(20)])
                ingest_seconds = time.monotonic() - started
                wait_until(lambda: len(fast.received) >= 20, timeout=15, message="the fast receiver's 20 alarms")
                fast_seconds = time.monotonic() - started

    assert {status for status, _ in answers} == {200}
    assert ingest_seconds < 5, f"ingesting 20 alarms took {ingest_seconds:.1f} s"
    assert fast_seconds < 10, f"the fast receiver waited {fast_seconds:.1f} s behind the slow one"
    assert len(slow.received) <= 8  # held to its sends in flight: still working through its share
    assert all(r.verified for r in fast.received)

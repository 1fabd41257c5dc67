#!/usr/bin/env python
"""Dispatch benchmark: how soon a committed event reaches a worker, and how fast a backlog drains.

    .venv/bin/python benchmarks/bench_dispatch.py [--rate 50] [--seconds 10] [--backlog 3000]

Uses a fresh PostgreSQL database ``portal_bench_dispatch`` and Redis db 12 on 127.0.0.1; starts the
real dispatcher (``manage.py dispatch_events``) and one Celery worker process (prefork, concurrency
1), as in production. Two phases:

  steady    events stored at a fixed rate through the portal's own store function; the figure is
            processed_at - received_at per event (commit → handler finished), p50/p95/p99/max
  backlog   N events stored while the worker is stopped, then one worker process started; the
            figure is events processed per second by that one process
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "portal_bench_dispatch"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
BROKER_URL = "redis://127.0.0.1:6379/12"
FIXTURE = ROOT / "tests" / "fixtures" / "pdk" / "door.request.allowed.json"


def configure_django():
    os.environ.update(DATABASE_URL=DATABASE_URL, CELERY_BROKER_URL=BROKER_URL, DEBUG="false")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def recreate_database():
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    env = {**os.environ, "DATABASE_URL": DATABASE_URL, "CELERY_BROKER_URL": BROKER_URL}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run(["redis-cli", "-n", "12", "flushdb"], check=True, stdout=subprocess.DEVNULL)


def start(argv, name):
    env = {**os.environ, "PORTAL_DISPATCH_INTERVAL_SECONDS": os.environ.get("PORTAL_DISPATCH_INTERVAL_SECONDS", "0.2")}
    log = open(f"/tmp/bench-dispatch-{name}.log", "wb")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def worker():
    celery = Path(sys.executable).parent / "celery"
    argv = [celery, "-A", "portal", "worker", "--pool", "prefork", "--concurrency", "1", "-l", "WARNING"]
    return start(argv + ["--without-gossip", "--without-mingle", "--without-heartbeat"], "worker")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def store_events(endpoint, prefix, count, rate=None):
    from events import store
    from events.sources import pdk
    from events.sources.base import Inbound

    template = json.loads(FIXTURE.read_bytes())
    started = time.perf_counter()
    for i in range(count):
        if rate:
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        body = json.dumps({**template, "id": f"{prefix}-{i}"}).encode()
        inbound = Inbound(headers={}, body=body)
        store.record_delivery(endpoint, inbound, pdk.identify(inbound), "127.0.0.1")


def wait_processed(events, count, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if events.exclude(status="pending").count() >= count:
            return True
        time.sleep(0.05)
    return False


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--backlog", type=int, default=3000)
    args = parser.parse_args()

    os.environ.update(DATABASE_URL=DATABASE_URL, CELERY_BROKER_URL=BROKER_URL)
    recreate_database()
    configure_django()
    from events.models import Endpoint, Event

    endpoint = Endpoint.objects.create(source="pdk", name="bench", secret="bench")
    dispatcher = start([sys.executable, "manage.py", "dispatch_events"], "dispatcher")
    first_worker = worker()
    try:
        time.sleep(3)  # both processes up
        steady_count = int(args.rate * args.seconds)
        store_events(endpoint, "steady", steady_count, rate=args.rate)
        steady = Event.objects.filter(dedup_key__contains=":steady-")
        if not wait_processed(steady, steady_count, 60):
            sys.exit("steady phase: events were not all processed within 60 s")
        lags = [
            (processed - received).total_seconds() * 1000
            for received, processed in steady.values_list("received_at", "processed_at")
        ]
        stop(first_worker)

        store_events(endpoint, "backlog", args.backlog)
        backlog = Event.objects.filter(dedup_key__contains=":backlog-")
        time.sleep(2)  # the dispatcher publishes the whole backlog before the worker starts
        drain_worker = worker()
        try:
            if not wait_processed(backlog, 1, 30):
                sys.exit("backlog phase: the worker never started")
            started = time.perf_counter()
            done_before = backlog.exclude(status="pending").count()
            if not wait_processed(backlog, args.backlog, 300):
                sys.exit("backlog phase: not drained within 300 s")
            drain_rate = (args.backlog - done_before) / (time.perf_counter() - started)
        finally:
            stop(drain_worker)
    finally:
        stop(dispatcher)

    statuses = set(Event.objects.values_list("status", "attempts"))
    print()
    print(f"Dispatch benchmark, {dt.date.today()}, {os.cpu_count()} cores")
    print(f"  dispatcher poll interval {os.environ.get('PORTAL_DISPATCH_INTERVAL_SECONDS', '0.2')} s; 1 worker process")
    print(f"  steady {args.rate:g} events/s for {args.seconds:g} s ({steady_count} events), commit -> processed:")
    print(
        f"    p50 {percentile(lags, 0.5):.0f} ms   p95 {percentile(lags, 0.95):.0f} ms   "
        f"p99 {percentile(lags, 0.99):.0f} ms   max {max(lags):.0f} ms"
    )
    print(f"  backlog of {args.backlog}: drained at {drain_rate:.0f} events/s by one worker process")
    print(f"  every event processed exactly once: {statuses == {('processed', 1)}} {sorted(statuses)}")
    if statuses != {("processed", 1)}:
        sys.exit(1)


if __name__ == "__main__":
    main()

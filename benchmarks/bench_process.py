#!/usr/bin/env python
"""Processing benchmark: a mixed backlog of vendor events drained by one Celery worker process.

    make bench-process     # i.e. .venv/bin/python benchmarks/bench_process.py [--events 100000]

Uses a fresh PostgreSQL database ``portal_bench_process`` and Redis db 10 on 127.0.0.1.

1. Builds N events from the vendor fixtures in realistic proportions (mostly door requests and
   lock/unlock; some door positions, alarms raised and cleared, battery and connection changes),
   spread over 60 PDK panels x 4 doors, 300 Seam devices and 200 SPK locks, with unique ids and
   increasing vendor times. Each goes through its vendor module's ``identify`` as at the ingress,
   and is stored as a pending event in bulk (the ingress has its own benchmark).
2. Publishes every pending event with the real dispatcher code, then starts ONE worker process
   (``celery worker --pool solo``, as ``--concurrency 1`` would run it without the fork) and
   measures how fast it drains the backlog: events/s from its first to its last processed event.
3. Checks that every event ended processed, once.
4. Queries per event: processes 20 more of each event type in this process, one per task, and
   counts the SQL statements of each (including the task's own four: BEGIN, lock the event,
   record its outcome, COMMIT), so the bound is stated, not guessed.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "portal_bench_process"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
BROKER_URL = "redis://127.0.0.1:6379/10"
FIXTURES = ROOT / "tests" / "fixtures"
TARGET_PER_WORKER = 300

# (vendor, fixture, share of the mix). Shares need not add up to exactly 1.
MIX = [
    ("pdk", "door.request.allowed", 0.30),
    ("pdk", "door.request.denied", 0.05),
    ("pdk", "door.input.dps.opened", 0.05),
    ("pdk", "door.input.dps.closed", 0.05),
    ("pdk", "door.alarm.propped.on", 0.01),
    ("pdk", "door.alarm.propped.off", 0.01),
    ("seam", "lock.unlocked", 0.17),
    ("seam", "lock.locked", 0.17),
    ("seam", "lock.access_denied", 0.02),
    ("seam", "device.battery_status_changed", 0.02),
    ("seam", "device.disconnected", 0.01),
    ("seam", "device.connected", 0.01),
    ("spk", "LockOpenRequested", 0.08),
    ("spk", "TempKeyUsed", 0.03),
    ("spk", "AlarmTriggered", 0.01),
    ("spk", "AlarmCleared", 0.01),
]


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
    subprocess.run(["redis-cli", "-n", "10", "flushdb"], check=True, stdout=subprocess.DEVNULL)


class Generator:
    """Vendor payloads from the fixtures, each a new event about one of many doors and locks."""

    def __init__(self, seed: int = 7):
        self.random = random.Random(seed)
        self.clock = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
        self.serial = 0
        self.templates = {}
        for vendor, name, share in MIX:
            path = FIXTURES / vendor / f"{name}.json"
            if path.exists():
                self.templates[(vendor, name)] = (json.loads(path.read_bytes()), share)
            else:
                print(f"  (no fixture {vendor}/{name}.json: left out of the mix)")

    def next_time(self) -> dt.datetime:
        self.clock += dt.timedelta(milliseconds=self.random.randint(1, 400))
        return self.clock

    def payload(self, vendor: str, name: str) -> dict:
        template = self.templates[(vendor, name)][0]
        payload = json.loads(json.dumps(template))
        self.serial += 1
        at = self.next_time()
        iso = at.isoformat().replace("+00:00", "Z")
        if vendor == "pdk":
            payload["id"] = f"bench-{self.serial}"
            payload["panelId"] = str(1070000 + self.random.randrange(60))
            payload.setdefault("body", {})["doorId"] = self.random.randrange(1, 5)
            payload.setdefault("metadata", {})["occurred"] = int(at.timestamp() * 1000)
            if "personId" in payload["body"]:
                payload["body"]["personId"] = self.random.randrange(1, 51)  # 50 people per panel
        elif vendor == "seam":
            payload["event_id"] = f"bench-{self.serial}"
            payload["device_id"] = f"00000000-0000-0000-0000-{self.random.randrange(300):012d}"
            payload["occurred_at"] = payload["created_at"] = iso
        else:
            payload["id"] = f"bench-{self.serial}"
            payload["time"] = iso
            data = payload["detail"].get("data", {})
            lock = f"00000000-0000-0000-0001-{self.random.randrange(200):012d}"
            for field in ("uuid", "lockUuid"):
                if field in data:
                    data[field] = lock
            if "deviceId" in data:
                data["deviceId"] = f"sensor-{self.random.randrange(100)}"
            if "timestamp" in data:
                data["timestamp"] = iso if isinstance(data["timestamp"], str) else int(at.timestamp() * 1000)
        return payload

    def mix(self, count: int):
        kinds = list(self.templates)
        weights = [self.templates[k][1] for k in kinds]
        for vendor, name in self.random.choices(kinds, weights, k=count):
            yield vendor, name, self.payload(vendor, name)


def store_events(generator: Generator, count: int, chunk: int = 5000) -> collections.Counter:
    from django.utils import timezone

    from events import sources
    from events.models import Event
    from events.sources.base import Inbound

    kinds = collections.Counter()
    batch = []
    for vendor, _name, payload in generator.mix(count):
        identified = sources.get(vendor).identify(Inbound(headers={}, body=json.dumps(payload).encode()))
        kinds[f"{vendor} {identified.event_type}"] += 1
        batch.append(
            Event(
                source=vendor,
                event_type=identified.event_type,
                dedup_key=identified.dedup_key,
                occurred_at=identified.occurred_at,
                received_at=timezone.now(),
                payload=identified.payload,
            )
        )
        if len(batch) >= chunk:
            Event.objects.bulk_create(batch)
            batch = []
    Event.objects.bulk_create(batch)
    return kinds


def queries_per_event(generator: Generator, per_type: int = 20) -> dict[str, tuple[float, int]]:
    """Process a sample of each type in this process and count its SQL statements."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from events import processing, sources
    from events.models import Event
    from events.sources.base import Inbound

    figures = {}
    for vendor, name in generator.templates:
        counts = []
        for _ in range(per_type):
            identified = sources.get(vendor).identify(
                Inbound(headers={}, body=json.dumps(generator.payload(vendor, name)).encode())
            )
            event = Event.objects.create(
                source=vendor,
                event_type=identified.event_type,
                dedup_key="sample-" + identified.dedup_key,
                occurred_at=identified.occurred_at,
                received_at=timezone.now(),
                payload=identified.payload,
                enqueued_at=timezone.now(),  # not for the dispatcher
            )
            with CaptureQueriesContext(connection) as queries:
                processing.process_batch([event.pk])
            counts.append(len(queries))
        figures[f"{vendor} {name}"] = (sum(counts) / len(counts), max(counts))
    return figures


def dispatch_all() -> int:
    from events import processing

    total = 0
    while published := processing.dispatch_new(limit=5000):
        total += published
    return total


def start_worker():
    celery = Path(sys.executable).parent / "celery"
    argv = [celery, "-A", "portal", "worker", "--pool", "solo", "-l", "WARNING"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    log = open("/tmp/bench-process-worker.log", "wb")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(argv, cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)


def stop(proc):
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=1800, help="give up draining after this many seconds")
    args = parser.parse_args()

    os.environ.update(DATABASE_URL=DATABASE_URL, CELERY_BROKER_URL=BROKER_URL)
    recreate_database()
    configure_django()
    from django.conf import settings
    from django.db.models import Count, Max, Min

    from events.models import Event

    generator = Generator()
    print(f"storing {args.events} events ...", flush=True)
    started = time.perf_counter()
    kinds = store_events(generator, args.events)
    print(f"  stored in {time.perf_counter() - started:.0f} s", flush=True)
    published = dispatch_all()
    print(f"published {published} events in tasks of up to {settings.PORTAL_PROCESS_BATCH} events", flush=True)

    worker = start_worker()
    try:
        deadline = time.monotonic() + args.timeout
        while Event.objects.filter(status="pending").exists():
            if time.monotonic() > deadline or worker.poll() is not None:
                sys.exit("the backlog was not drained (see /tmp/bench-process-worker.log)")
            time.sleep(1)
    finally:
        stop(worker)
    sample = queries_per_event(generator)  # now that the doors, locks and people exist, as in production

    bench = Event.objects.exclude(dedup_key__startswith="sample-")
    span = bench.aggregate(first=Min("processed_at"), last=Max("processed_at"))
    seconds = (span["last"] - span["first"]).total_seconds()
    rate = (args.events - 1) / seconds if seconds else float("inf")
    outcomes = dict(bench.values_list("status", "attempts").annotate(n=Count("id")).values_list("status", "n"))
    attempts = set(bench.values_list("attempts", flat=True).distinct())

    print()
    print(f"Processing benchmark, {dt.date.today()}, {os.cpu_count()} cores, PostgreSQL + Redis on 127.0.0.1")
    print(f"  {args.events} events, one worker process (solo pool), tasks of {settings.PORTAL_PROCESS_BATCH}")
    print(f"  mix: {', '.join(f'{k} {v / args.events:.0%}' for k, v in kinds.most_common())}")
    verdict = "PASS" if rate >= TARGET_PER_WORKER else "MISS"
    print(
        f"  drained at {rate:.0f} events/s per worker process ({seconds:.0f} s)  target {TARGET_PER_WORKER}: {verdict}"
    )
    print("  SQL statements per event (mean / max over 20 of each type, each alone in a task: +5 per task):")
    for name, (mean, most) in sorted(sample.items()):
        print(f"    {name:40} {mean:5.1f} / {most}")
    print(f"  outcomes: {outcomes}; attempts per event: {sorted(attempts)}")
    if set(outcomes) != {"processed"} or attempts != {1}:
        sys.exit(1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Notification benchmark: from a vendor's POST of a door alarm to the signed webhook arriving.

    make bench-notify        # i.e. .venv/bin/python benchmarks/bench_notify.py [--rate 50] [--seconds 60]

Uses a fresh PostgreSQL database ``portal_bench_notify`` and Redis db 8 on 127.0.0.1. Starts the
real processes as production runs them: gunicorn (the ingress), the dispatcher
(``manage.py dispatch_events``), one Celery worker (prefork, --concurrency 2) and the notifier
(the notifications queue, 4 threads), as the Procfile runs them. One webhook
notification rule (door alarms, every site) points at a receiver on 127.0.0.1 in this process that
verifies every Standard Webhooks signature with the ``standardwebhooks`` package.

PDK ``door.alarm.forced`` / ``door.alarm.propped.on`` events, each with a new id and its own door
(so storm control holds nothing back), are POSTed signed at a fixed rate; the figure is the time
from the start of the POST to the signed notification arriving, p50/p95/p99/max. The doors are set
up first, through the domain's verbs, as a building in service has them; ``--new-doors`` leaves
that out, so every alarm is also the first sight of its door (the worst case: the door is created
and named in the same transaction).
Exit status 1 if a notification is missing, duplicated or badly signed.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DB_NAME = "portal_bench_notify"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
REDIS_DB = "8"
BROKER_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
FIXTURES = ROOT / "tests" / "fixtures" / "pdk"
TARGET_P95_MS = 1000.0
BENCH = "this benchmark (sender, receiver)"


def recreate_database(env):
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run(["redis-cli", "-n", REDIS_DB, "flushdb"], check=True, stdout=subprocess.DEVNULL)


def start(argv, env, name):
    log = open(f"/tmp/bench-notify-{name}.log", "wb")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen([str(a) for a in argv], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop(proc):
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_port(port, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("gunicorn did not start")


def cpu_by_role(roles: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each role's process tree, and by this database's PostgreSQL
    backends, read from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    processes = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        processes[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick, command)
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in processes.items():
        children.setdefault(parent, []).append(pid)

    def tree(pid):
        return processes.get(pid, (0, 0.0, ""))[1] + sum(tree(child) for child in children.get(pid, []))

    used = {role: tree(pid) for role, pid in roles.items()}
    used[BENCH] = processes[os.getpid()][1]  # its own: the others are its children
    used["postgres"] = sum(cpu for _, cpu, command in processes.values() if f"postgres {DB_NAME} " in command)
    return used


def set_up_doors(template: dict, count: int) -> None:
    """The doors the alarms will be about, known to the portal as a PDK panel's doors are once it
    has reported them: placed on their panel, named."""
    from django.db import transaction
    from django.utils import timezone

    from portal import domain
    from portal.models import Placement

    panel_id, name = str(template["panelId"]), template["metadata"]["doorName"]
    named_at = timezone.now() - timedelta(days=1)
    for start in range(0, count, 500):
        with transaction.atomic():
            panel = domain.placement(Placement.Kind.PDK_PANEL, panel_id)
            for door in range(1000 + start, 1000 + min(count, start + 500)):
                domain.lock("pdk", f"{panel_id}:{door}", place=panel, reported_name=(name, named_at))


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--web-workers", type=int, default=4)
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--new-doors", action="store_true", help="do not set the doors up first")
    args = parser.parse_args()

    from tests.processes import free_port
    from tests.webhook_receiver import WebhookReceiver

    load_before = os.getloadavg()[0]
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATABASE_URL": DATABASE_URL,
        "CELERY_BROKER_URL": BROKER_URL,
        "DEBUG": "false",
        "PORTAL_PUBLIC_URL": public,
        "GUNICORN_ACCESS_LOG": "/tmp/bench-notify-access.log",
        "LOG_LEVEL": "WARNING",
    }
    recreate_database(env)
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from django.db.models import Count

    from events.models import Endpoint
    from subscriptions.models import Notification, NotificationRule, generate_webhook_secret

    pdk_secret = secrets.token_hex(16)
    endpoint = Endpoint.objects.create(source="pdk", name="bench", secret=pdk_secret)
    bin_dir = Path(sys.executable).parent
    count = int(args.rate * args.seconds)
    sent_at: dict[str, float] = {}
    arrived: dict[str, list[float]] = {}

    templates = {
        topic: json.loads((FIXTURES / f"{topic}.json").read_bytes())
        for topic in ("door.alarm.forced", "door.alarm.propped.on")
    }
    if not args.new_doors:
        set_up_doors(templates["door.alarm.forced"], count)

    with WebhookReceiver(generate_webhook_secret()) as receiver:
        rule = NotificationRule(
            name="bench",
            channel="webhook",
            url=receiver.url,
            secret=receiver.secret,
            alarm_kinds=["door_forced", "door_propped"],
        )
        rule.full_clean()
        rule.save()
        gunicorn = start(
            [bin_dir / "gunicorn", "portal.wsgi", "--config", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
             "--workers", str(args.web_workers)],
            env,
            "gunicorn",
        )  # fmt: skip
        dispatcher = start([sys.executable, "manage.py", "dispatch_events"], env, "dispatcher")
        worker = start(
            [bin_dir / "celery", "-A", "portal", "worker", "--pool", "prefork", "--concurrency",
             str(args.worker_concurrency), "--without-gossip", "--without-mingle", "--without-heartbeat",
             "-l", "WARNING"],
            env,
            "worker",
        )  # fmt: skip
        # The sends' own queue, served as the Procfile's notifier serves it: a thread pool.
        notifier = start(
            [bin_dir / "celery", "-A", "portal", "worker", "--queues", "notifications", "--pool", "threads",
             "--concurrency", "4", "--without-gossip", "--without-mingle", "--without-heartbeat",
             "-n", "notifier@%h", "-l", "WARNING"],
            env,
            "notifier",
        )  # fmt: skip
        try:
            wait_port(port)
            time.sleep(3)  # the dispatcher and the worker up

            bodies = []
            for i in range(count):
                topic = "door.alarm.forced" if i % 2 else "door.alarm.propped.on"
                payload = json.loads(json.dumps(templates[topic]))
                payload["id"] = f"bench-{i}"
                payload["body"]["doorId"] = 1000 + i
                payload["metadata"]["occurred"] = int(time.time() * 1000)
                body = json.dumps(payload).encode()
                signature = hmac.new(pdk_secret.encode(), body, hashlib.sha1).hexdigest()
                bodies.append((str(1000 + i), body, signature))

            errors = []

            def post(subject, body, signature):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                sent_at[subject] = time.time()
                try:
                    conn.request("POST", endpoint.path, body=body, headers={
                        "Content-Type": "application/json", "X-PDK-SIGNATURE": signature})  # fmt: skip
                    status = conn.getresponse().status
                    if status != 200:
                        errors.append(status)
                except OSError as exc:
                    errors.append(str(exc))
                finally:
                    conn.close()

            roles = {"gunicorn": gunicorn.pid, "dispatcher": dispatcher.pid, "worker": worker.pid,
                     "notifier": notifier.pid}  # fmt: skip
            cpu_before = cpu_by_role(roles)
            started = time.perf_counter()
            threads = []
            for i, item in enumerate(bodies):
                delay = started + i / args.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                thread = threading.Thread(target=post, args=item)  # open loop: a slow answer delays no other
                thread.start()
                threads.append(thread)
            for thread in threads:
                thread.join()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(receiver.received) < count:
                time.sleep(0.2)
            time.sleep(1)  # duplicates, if any, would arrive now
            cpu_after = cpu_by_role(roles)
        finally:
            for proc in (worker, notifier, dispatcher, gunicorn):
                stop(proc)

    subjects = {}
    bad = 0
    for got in receiver.received:
        if not got.verified:
            bad += 1
            continue
        subject = got.payload["data"]["subject"].rsplit(":", 1)[-1]  # the door id
        subjects.setdefault(subject, []).append(got.at)
    arrived = {s: min(times) for s, times in subjects.items()}
    duplicates = sum(len(times) - 1 for times in subjects.values())
    lags = [(arrived[s] - sent_at[s]) * 1000 for s in arrived if s in sent_at]
    statuses = dict(Notification.objects.order_by().values_list("status").annotate(n=Count("pk")))
    print()
    print(f"Notification benchmark, {time.strftime('%Y-%m-%d')}, os.cpu_count() = {os.cpu_count()}")
    print(
        f"  {args.rate:g} door alarms/s for {args.seconds:g} s ({count} events) POSTed signed to gunicorn "
        f"({args.web_workers} sync workers); dispatcher; 1 Celery worker (prefork x {args.worker_concurrency}) "
        "and the notifier (4 threads)"
    )
    print("  doors: " + ("each seen for the first time by its alarm" if args.new_doors else "known beforehand"))
    print(f"  ingress errors: {len(errors)}; notifications: {statuses}")
    # Other work on the machine (a test suite, say) shows here: the figures assume an otherwise idle box.
    print(f"  load average before the run {load_before:.2f}, after {os.getloadavg()[0]:.2f} (1 min)")
    print(f"  signed notifications arrived: {len(arrived)} of {count}; bad signatures {bad}; duplicates {duplicates}")
    if lags:
        p95 = percentile(lags, 0.95)
        print("  vendor POST -> signed webhook at the receiver:")
        print(f"    p50 {percentile(lags, 0.5):.0f} ms   p95 {p95:.0f} ms   p99 {percentile(lags, 0.99):.0f} ms   "
              f"max {max(lags):.0f} ms   (target p95 <= {TARGET_P95_MS:.0f} ms: "
              f"{'PASS' if p95 <= TARGET_P95_MS else 'MISS'})")  # fmt: skip
    print("  CPU per event, by process (ms):")
    print("    " + "; ".join(f"{role} {(cpu_after[role] - cpu_before[role]) * 1000 / count:.1f}" for role in cpu_after))
    if len(arrived) != count or bad or duplicates or errors:
        sys.exit(1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Admin benchmark: every changelist, the lock page and the dashboard at a million events.

    make bench-admin     # i.e. .venv/bin/python benchmarks/bench_admin.py [--reuse]

Uses a PostgreSQL database ``portal_bench_admin`` on 127.0.0.1: recreates it, migrates it and fills
it with ``generate_load_data`` at its default scale (1,000,000 events, 200,000 activity rows,
10,000 locks, 50,000 residents, ...). With ``--reuse`` an existing database that already has the
data is only migrated, so re-runs take a minute instead of several.

Then, in this process, Django's test client logged in as a superuser GETs every changelist of the
portal, events and subscriptions apps (found in ``admin.site._registry``), the busiest lists again
with common filters and a search, the page of the busiest lock, of a resident, of an alarm, and the
admin index (the dashboard). For each page: the server time (median of 3 after a warm-up, the
response fully rendered), the SQL statements it ran, PASS/MISS against 300 ms, and whether the
number of statements grows with the page size (measured with ``list_per_page`` 20 and 100).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "portal_bench_admin"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
BROKER_URL = "redis://127.0.0.1:6379/11"
TARGET_MS = 300
APPS = ("portal", "events", "subscriptions")
RUNS = 3


def database_has_data() -> bool:
    import psycopg

    try:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{DB_NAME}") as conn:
            return conn.execute("SELECT EXISTS (SELECT FROM events_event)").fetchone()[0]
    except psycopg.Error:
        return False


def recreate_database():
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def manage(*argv: str) -> None:
    env = {**os.environ, "DATABASE_URL": DATABASE_URL, "CELERY_BROKER_URL": BROKER_URL}
    subprocess.run([sys.executable, "manage.py", *argv], cwd=ROOT, env=env, check=True)


def configure_django():
    os.environ.update(DATABASE_URL=DATABASE_URL, CELERY_BROKER_URL=BROKER_URL, DEBUG="false")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


class Bench:
    def __init__(self, client, runs: int = RUNS):
        self.client = client
        self.runs = runs
        self.rows = []

    def measure(self, label: str, url: str, model_admin=None) -> None:
        """Time a page (median of the runs after a warm-up) and count its statements; for a
        changelist, count them again with 20 rows a page instead of 100."""
        try:
            response = self.client.get(url)  # warm-up (and the status)
        except Exception as exc:  # a page that crashes is reported, not the end of the benchmark
            self.rows.append((label, url, "ERROR", None, None, None, f"{type(exc).__name__}: {exc}"[:80]))
            return
        if response.status_code != 200:
            where = response.get("Location", "")
            self.rows.append((label, url, response.status_code, None, None, None, where))
            return
        times = []
        for _ in range(self.runs):
            began = time.perf_counter()
            self.client.get(url)
            times.append((time.perf_counter() - began) * 1000)
        count, small = self.statements(url, model_admin, 100), None
        if model_admin is not None:
            small = self.statements(url, model_admin, 20)
        self.rows.append((label, url, 200, statistics.median(times), count, small, ""))

    def statements(self, url: str, model_admin, per_page: int) -> int:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        before = model_admin.list_per_page if model_admin is not None else None
        if model_admin is not None:
            model_admin.list_per_page = per_page
        try:
            with CaptureQueriesContext(connection) as queries:
                self.client.get(url)
        finally:
            if model_admin is not None:
                model_admin.list_per_page = before
        return len(queries)

    def report(self) -> int:
        misses = 0
        print(f"  {'page':58} {'ms':>7} {'SQL':>4} {'@20':>4}  grows  verdict")
        for label, _url, status, ms, count, small, where in self.rows:
            if status != 200:
                print(f"  {label:58} {'-':>7} {'-':>4} {'-':>4}  {'':5}  MISS: HTTP {status} {where}")
                misses += 1
                continue
            grows = "-" if small is None else ("YES" if count > small else "no")
            ok = ms <= TARGET_MS and grows != "YES"
            misses += not ok
            print(
                f"  {label:58} {ms:7.0f} {count:4} {small if small is not None else '-':>4}  {grows:5}  "
                f"{'PASS' if ok else 'MISS'}"
            )
        return misses


def pages():
    """(label, url, model admin or None): changelists, filtered lists, searches, change pages."""
    from django.contrib import admin
    from django.db.models import Count
    from django.urls import reverse
    from django.utils import timezone

    from events.models import Event
    from portal.models import Activity, Alarm, Lock, Resident, Site

    found = []
    registry = admin.site._registry
    by_model = {}
    for model, model_admin in sorted(registry.items(), key=lambda item: (item[0]._meta.app_label, item[0].__name__)):
        opts = model._meta
        if opts.app_label not in APPS:
            continue
        name = f"admin:{opts.app_label}_{opts.model_name}_changelist"
        by_model[model] = (reverse(name), model_admin)
        found.append((f"{opts.app_label}.{opts.model_name} list", reverse(name), model_admin))

    def variant(model, label, query):
        if model in by_model:
            url, model_admin = by_model[model]
            found.append((f"{model._meta.app_label}.{model._meta.model_name} {label}", f"{url}?{query}", model_admin))

    site = Site.objects.annotate(n=Count("locks")).order_by("-n").first()
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    week_ago = quote(str(today - dt.timedelta(days=7)))  # as DateFieldListFilter writes them
    tomorrow = quote(str(today + dt.timedelta(days=1)))
    resident = Resident.objects.filter(grants__isnull=False).order_by("pk").first()
    lock_name = Lock.objects.exclude(name="").values_list("name", flat=True).order_by("pk").first() or "door"
    event = Event.objects.order_by("pk").only("dedup_key").first()
    if site:
        variant(Activity, f"site={site.pk}", f"site__id__exact={site.pk}")
        variant(Lock, f"site={site.pk}", f"site__id__exact={site.pk}")
        variant(Alarm, f"site={site.pk}", f"site__id__exact={site.pk}")
        variant(Resident, f"site={site.pk}", f"site__id__exact={site.pk}")
    variant(Activity, "last 7 days", f"occurred_at__gte={week_ago}&occurred_at__lt={tomorrow}")
    variant(
        Activity,
        "date hierarchy: a day",
        f"occurred_at__day={timezone.now().day}&occurred_at__month="
        f"{timezone.now().month}&occurred_at__year={timezone.now().year}",
    )
    variant(Activity, "action=request, result=denied", "action__exact=request&result__exact=denied")
    variant(Activity, "search a lock name", f"q={quote(lock_name.split()[0])}")
    variant(Alarm, "state=active", "state__exact=active")
    variant(Alarm, "state=cleared, severity=critical", "state__exact=cleared&severity__exact=critical")
    variant(Event, "status=failed", "status__exact=failed")
    variant(Event, "source=pdk", "source__exact=pdk")
    variant(Event, "event_type=door.request.allowed", "event_type__exact=door.request.allowed")
    variant(Event, "received last 7 days", f"received_at__gte={week_ago}&received_at__lt={tomorrow}")
    if event:
        variant(Event, "search a dedup key", f"q={quote(event.dedup_key)}")
    variant(Lock, "online=no", "online__exact=0")
    variant(Lock, "search", f"q={quote(lock_name.split()[0])}")
    if resident:
        variant(Resident, "search an email", f"q={quote(resident.email)}")
        variant(Resident, "search a name", f"q={quote(resident.name.split()[0])}")

    busy = Activity.objects.values("lock").annotate(n=Count("id")).order_by("-n").first()
    if busy:
        found.append(
            (
                f"lock page (busiest lock, {busy['n']} activity rows)",
                reverse("admin:portal_lock_change", args=[busy["lock"]]),
                None,
            )
        )
    if resident:
        found.append(("resident page", reverse("admin:portal_resident_change", args=[resident.pk]), None))
    alarm = Alarm.objects.order_by("-occurrences", "pk").first()
    if alarm:
        found.append(
            (
                f"alarm page ({alarm.occurrences} occurrences)",
                reverse("admin:portal_alarm_change", args=[alarm.pk]),
                None,
            )
        )
    found.append(("admin index (dashboard)", reverse("admin:index"), None))
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reuse", action="store_true", help="keep the database when it already has the data")
    parser.add_argument("--runs", type=int, default=RUNS, help="timed runs per page after the warm-up")
    parser.add_argument("generate", nargs="*", help="extra generate_load_data options (after --), e.g. --events 1000")
    args = parser.parse_args()

    if args.reuse and database_has_data():
        print(f"reusing {DB_NAME}", flush=True)
        manage("migrate", "-v0")
    else:
        recreate_database()
        manage("migrate", "-v0")
        print(f"generating the load data in {DB_NAME} ...", flush=True)
        began = time.perf_counter()
        manage("generate_load_data", *args.generate)
        print(f"  generated in {time.perf_counter() - began:.0f} s", flush=True)

    configure_django()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from events.models import Event
    from portal.models import Activity, Lock, Resident

    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client(HTTP_HOST=settings.ALLOWED_HOSTS[0] if settings.ALLOWED_HOSTS else "127.0.0.1")
    logging.getLogger("axes").setLevel(logging.WARNING)
    client.force_login(user)

    bench = Bench(client, args.runs)
    for label, url, model_admin in pages():
        bench.measure(label, url, model_admin)

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
    sizes = ", ".join(
        f"{model.objects.count():,} {model._meta.verbose_name_plural}" for model in (Event, Activity, Lock, Resident)
    )
    print()
    print(f"Admin benchmark, {dt.date.today()}, {os.cpu_count()} cores, PostgreSQL {version} on 127.0.0.1")
    print(f"  {sizes}")
    print(f"  server time: median of {args.runs} after a warm-up, superuser, in-process test client;")
    print(
        f"  target {TARGET_MS} ms and a statement count that doesn't grow with the page size (list_per_page 20 vs 100)"
    )
    misses = bench.report()
    print(f"  {len(bench.rows) - misses} PASS, {misses} MISS")
    sys.exit(1 if misses else 0)


if __name__ == "__main__":
    main()

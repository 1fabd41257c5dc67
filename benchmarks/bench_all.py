#!/usr/bin/env python
"""Every benchmark, one after the other, summed up in one table (`make bench`).

    make bench     # i.e. .venv/bin/python benchmarks/bench_all.py

Runs, each in its own process on its own fresh database, with shortened phases so the whole run
stays under 10 minutes on a 2-core machine:

  ingest    benchmarks/bench_ingest.py   gunicorn: the ingress beside a bare DRF view, same run
  process   benchmarks/bench_process.py  a mixed backlog drained by one worker process
  notify    benchmarks/bench_notify.py   vendor POST to signed webhook at a loopback receiver
  admin     benchmarks/bench_admin.py    every admin page at 1M events (the data is generated on
                                         the first run and reused afterwards)

Each benchmark's full report is kept in var/bench/<name>.log; the table quotes its figures.
Exit status 1 if a benchmark failed to run.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "var" / "bench"

RUNS = {
    "ingest": ["bench_ingest.py", "--duration", "6", "--steady-duration", "6", "--warmup", "1"],
    "process": ["bench_process.py", "--events", "30000"],
    "notify": ["bench_notify.py", "--seconds", "30"],
    "admin": ["bench_admin.py", "--reuse"],
}


def run(name: str) -> tuple[str, float, int]:
    LOGS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    script, *args = RUNS[name]
    print(f"running {name} ...", flush=True)
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, capture_output=True, text=True
    )
    output = done.stdout + done.stderr
    (LOGS / f"{name}.log").write_text(output)
    return output, time.monotonic() - started, done.returncode


def numbers(line: str) -> list[float]:
    return [float(n) for n in re.findall(r"\d+(?:\.\d+)?", line)]


def ingest_rows(out: str) -> list[tuple[str, str, str]]:
    phases = {}
    for line in out.splitlines():
        for phase in ("bare max", "ingest max", "ingest steady"):
            if line.startswith(phase):
                rps, p50, p99, _ = numbers(line.split("|")[0])[-4:]
                phases[phase] = (rps, p50, p99)
    if len(phases) < 3:
        return [("ingest", "no figures (see var/bench/ingest.log)", "")]
    bare, ingest, steady = phases["bare max"], phases["ingest max"], phases["ingest steady"]
    ratio = ingest[0] / bare[0]
    return [
        ("ingest throughput", f"{ingest[0]:.0f} events/s vs bare view {bare[0]:.0f} req/s: {ratio:.0%}", "≥ 50%"),
        (
            "ingest ack latency",
            f"p50 {steady[1]:.1f} ms, p99 {steady[2]:.1f} ms at {steady[0]:.0f} events/s",
            "p99 ≤ 50 ms",
        ),
    ]


def process_rows(out: str) -> list[tuple[str, str, str]]:
    found = re.search(r"drained at (\d+) events/s per worker process", out)
    figure = f"{found.group(1)} events/s per worker process (30,000 mixed events)" if found else "no figure"
    return [("backlog drain", figure, "≥ 300/s")]


def notify_rows(out: str) -> list[tuple[str, str, str]]:
    found = re.search(r"p50 (\d+) ms\s+p95 (\d+) ms", out)
    figure = f"p50 {found.group(1)} ms, p95 {found.group(2)} ms (50 alarms/s for 30 s)" if found else "no figure"
    return [("webhook to notification", figure, "p95 ≤ 1 s")]


def admin_rows(out: str) -> list[tuple[str, str, str]]:
    rows = []
    pages = re.findall(r"^  (.+?)\s+(\d+)\s+(\d+)\s+(\d+|-)\s+(no|yes|-)\s+(PASS|MISS)", out, flags=re.M)
    if pages:
        slowest = max(pages, key=lambda page: int(page[1]))
        growing = [page[0].strip() for page in pages if page[4] == "yes"]
        passed = sum(page[5] == "PASS" for page in pages)
        rows.append(
            (
                "admin pages (1M events)",
                f"{passed} of {len(pages)} under 300 ms; slowest {slowest[0].strip()} {slowest[1]} ms",
                "≤ 300 ms",
            )
        )
        statements = [int(page[2]) for page in pages]
        rows.append(
            (
                "admin statements per page",
                f"{min(statements)}-{max(statements)}; grow with page size: {', '.join(growing) or 'none'}",
                "no growth",
            )
        )
        for label in ("lock page", "admin index (dashboard)", "events.event list", "portal.activity list"):
            for page in pages:
                if page[0].strip().startswith(label):
                    rows.append(("  " + page[0].strip(), f"{page[1]} ms, {page[2]} statements", ""))
    return rows or [("admin pages", "no figures (see var/bench/admin.log)", "")]


def main() -> int:
    started = time.monotonic()
    rows, failures, timings = [], [], []
    for name, summarise in (
        ("ingest", ingest_rows),
        ("process", process_rows),
        ("notify", notify_rows),
        ("admin", admin_rows),
    ):
        output, seconds, code = run(name)
        timings.append(f"{name} {seconds:.0f} s")
        if code != 0:
            failures.append(f"{name} exited {code} (see var/bench/{name}.log)")
        rows += summarise(output)
    width = max(len(r[0]) for r in rows)
    print()
    print(f"Benchmarks, {dt.date.today()}, {os.cpu_count()} cores, PostgreSQL and Redis on 127.0.0.1")
    print(f"  {'measure':<{width}}  {'figure':<78}  target")
    for measure, figure, target in rows:
        print(f"  {measure:<{width}}  {figure:<78}  {target}")
    print(f"  took {time.monotonic() - started:.0f} s ({', '.join(timings)}); full reports in var/bench/")
    for failure in failures:
        print(f"! {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

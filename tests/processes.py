"""Real processes for tests: a private Redis, Celery workers, the dispatcher, a gunicorn server."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float = 20, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def test_database_url() -> str:
    """The URL of the database pytest-django created, for processes started by a test."""
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def process_env(broker_url: str | None = None, **extra: str) -> dict:
    return {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "CELERY_BROKER_URL": broker_url or settings.CELERY_BROKER_URL,
        "PORTAL_DISPATCH_INTERVAL_SECONDS": "0.1",
        **extra,
    }


@contextlib.contextmanager
def running(argv: list, env: dict, log_name: str):
    """Run a process for the duration of the block; its output goes to var/test-logs/."""
    logs = ROOT / "var" / "test-logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{log_name}.log", "wb") as log:
        proc = subprocess.Popen([str(a) for a in argv], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def redis_server(port: int, log_name: str = "redis"):
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    return running(argv, dict(os.environ), log_name)


def celery_worker(env: dict, name: str = "worker", concurrency: int = 1, queues: str = "celery,notifications"):
    """A worker as production runs one; by default it also serves the notifications queue (which
    production gives a thread-pool worker of its own)."""
    argv = [BIN / "celery", "-A", "portal", "worker", "--pool", "prefork", "--concurrency", str(concurrency)]
    argv += ["--queues", queues]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"{name}@%h", "-l", "INFO"]
    return running(argv, env, name)


def gunicorn(port: int, env: dict, name: str = "gunicorn", workers: int = 1):
    argv = [BIN / "gunicorn", "portal.wsgi", "--config", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}"]
    return running(argv + ["--workers", str(workers)], env, name)


def dispatcher(env: dict, name: str = "dispatcher"):
    return running([sys.executable, "manage.py", "dispatch_events"], env, name)


def notifier(env: dict, name: str = "notifier", threads: int = 8):
    """The thread-pool worker that sends notifications, as the Procfile runs it."""
    argv = [BIN / "celery", "-A", "portal", "worker", "--queues", "notifications", "--pool", "threads"]
    argv += ["--concurrency", str(threads), "--without-gossip", "--without-mingle", "--without-heartbeat"]
    return running(argv + ["-n", f"{name}@%h", "-l", "INFO"], env, name)


def beat(env: dict, name: str = "beat"):
    """Celery beat with the portal's schedule (django-celery-beat's DatabaseScheduler)."""
    return running([BIN / "celery", "-A", "portal", "beat", "-l", "INFO"], env, name)


def answers_ping(env: dict, name: str, timeout: float = 3) -> bool:
    """The liveness probe production runs against a worker: does it answer a remote-control ping?"""
    destination = f"{name}@{socket.gethostname()}"
    argv = [BIN / "celery", "-A", "portal", "inspect", "ping", "-d", destination, "--timeout", str(timeout)]
    done = subprocess.run([str(a) for a in argv], cwd=ROOT, env=env, capture_output=True, timeout=timeout + 30)
    return done.returncode == 0 and b"pong" in done.stdout

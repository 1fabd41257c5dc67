"""Test-session setup: refuse to start unless PostgreSQL and Redis are really there."""

import socket
from urllib.parse import urlparse

import pytest

START_POSTGRES = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
START_REDIS = 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no'


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def pytest_sessionstart(session):
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.postgresql":
        pytest.exit("The tests need PostgreSQL: run `make test` (or set DATABASE_URL=postgres://…).", returncode=3)
    host, port = database.get("HOST") or "127.0.0.1", int(database.get("PORT") or 5432)
    if not _reachable(host, port):
        pytest.exit(f"PostgreSQL is not reachable at {host}:{port}. Start it with:\n  {START_POSTGRES}", returncode=3)
    broker = urlparse(settings.CELERY_BROKER_URL)
    if broker.scheme not in ("redis", "rediss"):
        message = "The tests need Redis as the broker: run `make test` (or set CELERY_BROKER_URL=redis://…)."
        pytest.exit(message, returncode=3)
    host, port = broker.hostname or "127.0.0.1", broker.port or 6379
    if not _reachable(host, port):
        pytest.exit(f"Redis is not reachable at {host}:{port}. Start it with:\n  {START_REDIS}", returncode=3)

"""Liveness and readiness probes for load balancers and orchestrators."""

from django.db import connection
from django.http import JsonResponse

from portal.celery import app as celery_app


def healthz(request):
    """The process is up and serving requests; checks nothing else."""
    return JsonResponse({"status": "ok"})


def _database_ready() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any failure means "not ready"; the reason goes to the operator
        return f"database unreachable: {exc.__class__.__name__}"
    return None


def _broker_ready() -> str | None:
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=1)
    except Exception as exc:
        return f"broker unreachable: {exc.__class__.__name__}"
    return None


def readyz(request):
    """Ready when the database answers; a 503 names it. The broker is reported, not required:
    with Redis down the ingress still stores and acknowledges, so taking web processes out of
    rotation would turn a broker outage into lost deliveries."""
    database, broker = _database_ready(), _broker_ready()
    body = {"status": "unavailable" if database else "ok", "problems": [p for p in (database, broker) if p]}
    return JsonResponse(body, status=503 if database else 200)

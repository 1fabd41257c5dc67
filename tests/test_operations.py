"""What an operator relies on: probes, pruning, and the quick start on embedded defaults."""

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from events.models import Delivery, Event, RejectedRequest
from events.tasks import prune_old_records
from tests.processes import ROOT
from tests.vendors import fixture_bytes

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_touching_services(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_is_ok_when_database_and_broker_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()


def test_readyz_reports_a_broker_outage_without_leaving_rotation(client, monkeypatch):
    # Celery reads CELERY_BROKER_URL from the environment first, as it does in production.
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:9/0")
    response = client.get("/readyz")
    assert response.status_code == 200  # the ingress still stores and acknowledges
    assert response.json()["problems"] == ["broker unreachable: OperationalError"]


def test_prune_removes_old_raw_deliveries_and_rejections_but_keeps_events(post, endpoint_for, settings):
    settings.PORTAL_RETENTION_DAYS = 30
    endpoint = endpoint_for("pdk")
    old = post(endpoint, fixture_bytes("pdk", "door.request.allowed.json")).json()["event_id"]
    post(endpoint, fixture_bytes("pdk", "door.request.denied.json"))
    post(endpoint, b"{}", {"X-PDK-SIGNATURE": "bad"}, sign=False)
    post(endpoint, b"{}", {"X-PDK-SIGNATURE": "bad"}, sign=False)
    long_ago = timezone.now() - timedelta(days=31)
    Delivery.objects.filter(event_id=old).update(received_at=long_ago)
    RejectedRequest.objects.filter(pk=RejectedRequest.objects.first().pk).update(received_at=long_ago)

    assert prune_old_records(batch=1) == {"deliveries": 1, "rejections": 1}
    assert Event.objects.count() == 2
    assert Delivery.objects.count() == 1 and RejectedRequest.objects.count() == 1


@pytest.mark.slow
def test_quick_start_defaults_need_no_server(tmp_path):
    """SQLite and the filesystem broker: migrate, create an endpoint, accept and process an event."""
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "CELERY_BROKER_URL")} | {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        "ALLOWED_HOSTS": "testserver",
        "PORTAL_VAR_DIR": str(tmp_path),
    }
    script = """
import django, json
django.setup()
from django.core.management import call_command
from django.test import Client
from events import processing
from events.models import Endpoint, Event
from events.sources import pdk
call_command("migrate", verbosity=0)
endpoint = Endpoint.objects.create(source="pdk", name="demo", secret="s")
body = open("tests/fixtures/pdk/door.request.allowed.json", "rb").read()
headers = {"X-PDK-SIGNATURE": pdk.signature("s", body)}
answers = [Client().post(endpoint.path, body, content_type="application/json", headers=headers) for _ in range(2)]
assert [a.json()["duplicate"] for a in answers] == [False, True], [a.content for a in answers]
assert processing.dispatch_new() == 1
processing.process(answers[0].json()["event_id"])
print(Event.objects.get().status)
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "portal.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "processed"


def test_deploy_check_names_quick_start_defaults(settings):
    from portal.checks import DEV_SECRET_KEY, quick_start_defaults

    settings.SECRET_KEY = DEV_SECRET_KEY
    settings.CELERY_BROKER_URL = "filesystem://"
    assert {w.id for w in quick_start_defaults(None)} == {"portal.W001", "portal.W003"}
    settings.SECRET_KEY = "a-real-secret-" * 4
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    assert quick_start_defaults(None) == []


def test_demo_fills_an_empty_portal_once():
    import io

    from django.core.management import call_command

    from tests.vendors import fixture_files

    out = io.StringIO()
    call_command("load_demo", "--if-empty", stdout=out)
    samples = sum(len(fixture_files(v)) for v in ("pdk", "spk", "seam"))
    assert Event.objects.count() == samples
    assert "70 samples accepted" in out.getvalue()

    call_command("load_demo", "--if-empty", stdout=out)
    assert Event.objects.count() == samples

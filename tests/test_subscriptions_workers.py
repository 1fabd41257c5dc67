"""PDK subscriptions through real Celery workers: the queue, the shared token, and end to end."""

import hashlib
import hmac
import io
import json
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.core.management import call_command

from events.models import Event
from portal.celery import app
from subscriptions import tasks
from subscriptions.models import PdkConnection, PdkSubscription
from tests import fake_pdk
from tests.fake_pdk import FakePdk
from tests.helpers import http_post
from tests.processes import BIN, process_env, running, wait_until
from tests.vendors import fixture_bytes

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def worker_env(**extra) -> dict:
    """Workers share the cache through Redis (the broker's server), as in production."""
    broker = urlparse(settings.CELERY_BROKER_URL)
    return process_env(
        CACHE_URL=f"redis://{broker.hostname}:{broker.port or 6379}{broker.path or '/0'}",
        PORTAL_PDK_TIMEOUT_SECONDS="2",
        PORTAL_PDK_MAX_BACKOFF_SECONDS="0.5",
        **extra,
    )


def pdk_worker(env: dict, name: str, queue: str = "celery"):
    argv = [BIN / "celery", "-A", "portal", "worker", "--pool", "prefork", "--concurrency", "1", "-Q", queue]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"{name}@%h", "-l", "INFO"]
    return running(argv, env, name)


@pytest.fixture(autouse=True)
def empty_queue():
    app.control.purge()  # messages about rows of earlier tests' databases
    yield
    app.control.purge()


def make_connection(fake) -> PdkConnection:
    return PdkConnection.objects.create(
        name="HQ",
        org_id=fake_pdk.ORG_ID,
        client_id=fake_pdk.CLIENT_ID,
        client_secret=fake_pdk.CLIENT_SECRET,
        accounts_url=fake.url,
    )


def test_two_workers_share_one_token(settings):
    settings.PORTAL_PUBLIC_URL = "https://portal.example.com"
    with FakePdk() as fake:
        connection = make_connection(fake)
        subscriptions = []
        for name in ("East doors", "West doors"):
            subscription = PdkSubscription(connection=connection, name=name, events=["door.request.allowed"])
            subscription.full_clean()
            subscription.save_new()
            subscriptions.append(subscription)
        app.control.purge()  # their pushes go to the two workers below, one each
        env = worker_env(PORTAL_PUBLIC_URL=settings.PORTAL_PUBLIC_URL)
        with pdk_worker(env, "pdk-a", "pdk-a"), pdk_worker(env, "pdk-b", "pdk-b"):
            tasks.push_subscription.apply_async([subscriptions[0].pk], queue="pdk-a")
            wait_until(lambda: len(fake.hooks) == 1, timeout=30, message="worker a to push")
            tasks.push_subscription.apply_async([subscriptions[1].pk], queue="pdk-b")
            wait_until(lambda: len(fake.hooks) == 2, timeout=30, message="worker b to push")
        assert fake.token_calls == 1
        assert {s.sync_state for s in PdkSubscription.objects.all()} == {"in_sync"}


def test_subscription_from_the_command_line_reaches_pdk_and_its_deliveries_are_stored(live_server, settings):
    # PDK requires https; the fake delivers over plain HTTP to the same host and path.
    public = live_server.url.replace("http://", "https://")
    settings.PORTAL_PUBLIC_URL = public
    with FakePdk() as fake, pdk_worker(worker_env(PORTAL_PUBLIC_URL=public), "pdk-e2e"):
        out = io.StringIO()
        call_command(
            "pdk_connection",
            "add",
            "--name",
            "HQ",
            "--org",
            fake_pdk.ORG_ID,
            "--client-id",
            fake_pdk.CLIENT_ID,
            "--client-secret",
            fake_pdk.CLIENT_SECRET,
            "--accounts-url",
            fake.url,
            stdout=out,
        )
        call_command(
            "pdk_subscription",
            "add",
            "--connection",
            "HQ",
            "--name",
            "Lobby",
            "--events",
            "door.request.allowed,door.request.denied",
            "--scope",
            "1070000",
            stdout=out,
        )
        subscription = PdkSubscription.objects.get()
        wait_until(
            lambda: PdkSubscription.objects.filter(sync_state="in_sync").exists(), timeout=30, message="the push"
        )
        subscription.refresh_from_db()
        hook = fake.hooks[subscription.remote_id]
        assert hook["url"] == f"{public}/webhooks/pdk/{subscription.endpoint_id}/"
        assert hook["scope"] == ["1070000"] and hook["events"] == ["door.request.allowed", "door.request.denied"]

        body = fixture_bytes("pdk", "door.request.allowed.json")
        status, answer = fake.deliver(subscription.remote_id, body)
        assert status == 200, answer
        event = Event.objects.get(pk=json.loads(answer)["event_id"])
        assert (event.endpoint_id, event.event_type) == (subscription.endpoint_id, "door.request.allowed")

        # The signature is checked: the same body signed with another secret is refused.
        forged = hmac.new(b"not-the-secret", body, hashlib.sha1).hexdigest()
        status, _ = http_post(live_server.url, urlparse(hook["url"]).path, body, {"X-PDK-SIGNATURE": forged})
        assert status == 401

        # Deleting goes through the queue too; the row goes once PDK confirms.
        subscription.request_delete()
        wait_until(lambda: not PdkSubscription.objects.exists(), timeout=30, message="the delete")
        assert fake.hooks == {}

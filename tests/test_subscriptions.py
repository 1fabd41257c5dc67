"""PDK subscriptions: PDK's validation rules, the API client, push, delete, reconcile and rotation,
against a fake PDK over real HTTP."""

import io
import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from events.models import Endpoint, Event
from subscriptions import sync, topics
from subscriptions.models import PdkConnection, PdkSubscription
from subscriptions.pdk_client import PdkClient, PdkError
from tests import fake_pdk
from tests.fake_pdk import FakePdk
from tests.processes import wait_until
from tests.vendors import fixture_bytes, pdk_signature

SEED = Path(__file__).resolve().parent.parent.parent / "shared" / "seeds" / "002_8afbe2e1e164ae54.txt"
State = PdkSubscription.SyncState
PANEL_EVENTS = ["door.request.allowed", "door.request.denied"]


@pytest.fixture(autouse=True)
def fast_pdk(settings):
    settings.PORTAL_PUBLIC_URL = "https://portal.example.com"
    settings.PORTAL_PDK_TIMEOUT_SECONDS = 0.5
    settings.PORTAL_PDK_MAX_ATTEMPTS = 3
    settings.PORTAL_PDK_MAX_BACKOFF_SECONDS = 2
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def fake():
    with FakePdk() as server:
        yield server


@pytest.fixture
def connection(db, fake):
    return PdkConnection.objects.create(
        name="HQ",
        org_id=fake_pdk.ORG_ID,
        client_id=fake_pdk.CLIENT_ID,
        client_secret=fake_pdk.CLIENT_SECRET,
        accounts_url=fake.url,
    )


def new_subscription(connection, **fields) -> PdkSubscription:
    values = {"name": "Front doors", "events": PANEL_EVENTS, **fields}
    subscription = PdkSubscription(connection=connection, **values)
    subscription.full_clean()
    subscription.save_new()
    return subscription


def pushed(connection, **fields) -> PdkSubscription:
    subscription = new_subscription(connection, **fields)
    assert sync.push(subscription.pk) == "created"
    subscription.refresh_from_db()
    assert subscription.sync_state == State.IN_SYNC
    return subscription


# --- topics and validation ----------------------------------------------------------------------


def test_topic_lists_match_the_seed_with_its_organization_and_panel_sections():
    text = SEED.read_text()
    organization, panel = text.split("\nPanel Events\n")
    assert set(re.findall(r'"topic":\s*"([^"]+)"', organization)) == topics.ORGANIZATION_TOPICS
    assert set(re.findall(r'"topic":\s*"([^"]+)"', panel)) == topics.PANEL_TOPICS
    assert len(topics.ALL_TOPICS) == 70 and len(topics.ORGANIZATION_TOPICS) == 10


INVALID = [
    ("name", {"name": "x" * 71}),
    ("events", {"events": []}),
    ("events", {"events": ["door.request.allowed", "ou.created"]}),
    ("events", {"events": ["door.request.teleported"]}),
    ("events", {"events": "door.request.allowed"}),
    ("scope", {"scope": "everywhere"}),
    ("scope", {"scope": []}),
    ("scope", {"scope": ["1070000"], "events": ["ou.created"]}),
    ("auth_user", {"auth_type": "Basic", "auth_password": "pw"}),
    ("auth_password", {"auth_type": "Basic", "auth_user": "pdk"}),
    ("auth_user", {"auth_type": "Basic", "auth_user": "a:b", "auth_password": "pw"}),
    ("auth_type", {"auth_type": "None", "auth_user": "pdk"}),
    ("auth_type", {"auth_type": "Digest"}),
    ("secrecy_level", {"secrecy_level": 3}),
    ("expires_at", {"expires_at": timezone.now() - timedelta(minutes=1)}),
    ("secret", {"secret": "s" * 256}),
    ("url", {"managed": False, "url": "http://example.com/hook"}),
    ("url", {"managed": False, "url": ""}),
]


@pytest.mark.parametrize(("field", "values"), INVALID, ids=[f"{f}-{i}" for i, (f, _) in enumerate(INVALID)])
def test_each_pdk_rule_rejects_bad_input_on_its_field(connection, field, values):
    subscription = PdkSubscription(connection=connection, **{"name": "ok", "events": PANEL_EVENTS, **values})
    with pytest.raises(ValidationError) as error:
        subscription.full_clean()
    assert field in error.value.message_dict


def test_valid_subscriptions_pass_every_rule(connection):
    for values in (
        {"scope": "ou", "events": ["ou.created", "permission.updated"]},
        {"scope": ["1070000", "1070001"], "events": PANEL_EVENTS, "secrecy_level": 0},
        {"auth_type": "Basic", "auth_user": "pdk", "auth_password": "pw", "secrecy_level": 2},
        {"expires_at": timezone.now() + timedelta(days=1), "name": "x" * 70},
    ):
        PdkSubscription(connection=connection, **{"name": "ok", "events": PANEL_EVENTS, **values}).full_clean()


def test_managed_url_must_be_https(connection, settings):
    settings.PORTAL_PUBLIC_URL = "http://127.0.0.1:8000"
    subscription = PdkSubscription(connection=connection, name="x", events=PANEL_EVENTS)
    with pytest.raises(ValidationError) as error:
        subscription.full_clean()
    assert "PORTAL_PUBLIC_URL" in error.value.message_dict["url"][0]


def test_a_past_expiry_is_refused_when_set_not_when_it_passes(connection):
    subscription = new_subscription(connection, expires_at=timezone.now() + timedelta(seconds=1))
    PdkSubscription.objects.filter(pk=subscription.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    subscription.refresh_from_db()
    subscription.full_clean()  # unchanged: fine
    subscription.expires_at -= timedelta(minutes=5)
    with pytest.raises(ValidationError):
        subscription.full_clean()


def test_managed_subscription_gets_its_own_endpoint_and_generated_secret(connection):
    subscription = new_subscription(connection)
    endpoint = subscription.endpoint
    assert endpoint.source == "pdk" and endpoint.active
    assert subscription.url == f"https://portal.example.com/webhooks/pdk/{endpoint.pk}/"
    assert len(subscription.secret) >= 32 and endpoint.secret == subscription.secret
    assert subscription.sync_state == State.PENDING_PUSH


# --- the admin form and the commands report the rules on their fields --------------------------


def admin_add(admin_client, connection, **fields):
    data = {
        "connection": connection.pk,
        "name": "Front doors",
        "events": PANEL_EVENTS,
        "scope": "ouRecursive",
        "auth_type": "None",
        "auth_user": "",
        "auth_password": "",
        "active": "on",
        "ssl_verification": "on",
        "secrecy_level": "1",
        "expires_at_0": "",
        "expires_at_1": "",
        **fields,
    }
    return admin_client.post(reverse("admin:subscriptions_pdksubscription_add"), data)


@pytest.mark.parametrize(
    ("field", "fields"),
    [
        ("name", {"name": "x" * 71}),
        ("events", {"events": ["door.request.allowed", "ou.created"]}),
        ("events", {"events": ["door.request.teleported"]}),
        ("events", {"events": []}),
        ("scope", {"scope": "1070000", "events": ["ou.created"]}),
        ("scope", {"scope": ", ,"}),
        ("auth_password", {"auth_type": "Basic", "auth_user": "pdk"}),
        ("secrecy_level", {"secrecy_level": "5"}),
        ("expires_at", {"expires_at_0": "2001-01-01", "expires_at_1": "00:00:00"}),
    ],
)
def test_admin_form_shows_each_error_on_its_field(admin_client, connection, field, fields):
    response = admin_add(admin_client, connection, **fields)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors.get(field), response.context["adminform"].form.errors
    assert not PdkSubscription.objects.exists()


def test_admin_add_saves_a_pending_push_with_panel_scope(admin_client, connection, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_add(admin_client, connection, scope="1070000, 1070001")
    assert response.status_code == 302
    subscription = PdkSubscription.objects.get()
    assert subscription.scope == ["1070000", "1070001"] and subscription.sync_state == State.PENDING_PUSH
    assert len(callbacks) == 1  # the push is published once the admin's transaction commits


def test_admin_edit_keeps_the_write_only_password(admin_client, connection):
    subscription = new_subscription(connection, auth_type="Basic", auth_user="pdk", auth_password="door-pw")
    url = reverse("admin:subscriptions_pdksubscription_change", args=[subscription.pk])
    page = admin_client.get(url).content.decode()
    assert "door-pw" not in page and subscription.secret not in page
    data = {
        "name": "Renamed",
        "events": PANEL_EVENTS,
        "scope": "ou",
        "auth_type": "Basic",
        "auth_user": "pdk",
        "auth_password": "",
        "secrecy_level": "1",
        "active": "on",
        "ssl_verification": "on",
        "expires_at_0": "",
        "expires_at_1": "",
    }
    assert admin_client.post(url, data).status_code == 302
    subscription.refresh_from_db()
    assert (subscription.name, subscription.auth_password, subscription.config_version) == ("Renamed", "door-pw", 2)
    assert subscription.endpoint.basic_password == "door-pw"


def add_subscription(*args):
    return call_command("pdk_subscription", "add", "--connection", "HQ", *args, stdout=io.StringIO())


@pytest.mark.parametrize(
    ("field", "args"),
    [
        ("name", ["--name", "x" * 71, "--events", "door.request.allowed"]),
        ("events", ["--name", "n", "--events", "door.request.allowed,ou.created"]),
        ("events", ["--name", "n", "--events", "door.request.teleported"]),
        ("events", ["--name", "n", "--events", ","]),
        ("scope", ["--name", "n", "--events", "ou.created", "--scope", "1070000"]),
        ("secrecy_level", ["--name", "n", "--events", "ou.created", "--secrecy-level", "3"]),
        ("expires_at", ["--name", "n", "--events", "ou.created", "--expires-at", "2001-01-01T00:00:00Z"]),
        ("expires_at", ["--name", "n", "--events", "ou.created", "--expires-at", "next tuesday"]),
        ("auth_password", ["--name", "n", "--events", "ou.created", "--basic-user", "pdk"]),
    ],
)
def test_command_exits_non_zero_naming_the_field(connection, field, args):
    with pytest.raises(CommandError, match=f"{field}:"):
        add_subscription(*args)
    assert not PdkSubscription.objects.exists()


def test_command_refuses_an_http_public_url(connection, settings):
    settings.PORTAL_PUBLIC_URL = "http://127.0.0.1:8000"
    with pytest.raises(CommandError, match="url: PDK requires an https URL"):
        add_subscription("--name", "n", "--events", "door.request.allowed")


def test_commands_create_a_connection_and_a_pending_subscription(db, fake):
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
        fake.url + "/",
        stdout=io.StringIO(),
    )
    assert PdkConnection.objects.get().accounts_url == fake.url
    add_subscription("--name", "Lobby", "--events", "door.request.allowed", "--scope", "1070000,1070001")
    subscription = PdkSubscription.objects.get()
    assert (subscription.scope, subscription.sync_state, subscription.managed) == (
        ["1070000", "1070001"],
        State.PENDING_PUSH,
        True,
    )


# --- the client -------------------------------------------------------------------------------


def test_token_is_fetched_once_and_reused(connection, fake):
    client = PdkClient(connection)
    client.list_hooks()
    PdkClient(connection).list_hooks()  # another client, same shared cache
    assert fake.token_calls == 1


def test_expired_token_is_replaced_once_on_401(connection, fake):
    client = PdkClient(connection)
    client.list_hooks()
    fake.expire_tokens()
    assert client.list_hooks() == []
    assert fake.token_calls == 2


def test_a_second_401_is_an_error_not_a_loop(connection, fake):
    fake.fail("GET", 401, times=5, path="/api/", message="token revoked")
    with pytest.raises(PdkError) as error:
        PdkClient(connection).list_hooks()
    assert error.value.status == 401 and "token revoked" in str(error.value)
    assert fake.count("GET", "/api/") == 2


def test_wrong_client_secret_says_the_token_failed(connection, fake):
    connection.client_secret = "wrong"
    with pytest.raises(PdkError, match="fetching a token: PDK answered 401: Invalid client credentials"):
        PdkClient(connection).list_hooks()


@pytest.mark.parametrize("header", ["Retry-After", "X-RateLimit-Reset"])
def test_429_waits_for_the_reset_then_retries(connection, fake, header):
    value = "1" if header == "Retry-After" else str(int(time.time()) + 2)
    fake.fail("GET", 429, path="/api/", headers={header: value, "X-RateLimit-Remaining": "0"})
    started = time.monotonic()
    assert PdkClient(connection).list_hooks() == []
    assert time.monotonic() - started >= 0.9
    assert fake.count("GET", "/api/") == 2


def test_5xx_is_retried_with_backoff(connection, fake):
    fake.fail("GET", 503, times=2, path="/api/")
    assert PdkClient(connection).list_hooks() == []
    assert fake.count("GET", "/api/") == 3


def test_retries_are_bounded_and_the_error_carries_pdk_status_and_message(connection, fake):
    fake.fail("GET", 502, times=10, path="/api/", message="bad gateway upstream")
    with pytest.raises(PdkError) as error:
        PdkClient(connection).list_hooks()
    assert (error.value.status, error.value.message) == (502, "bad gateway upstream")
    assert fake.count("GET", "/api/") == 3


def test_other_4xx_is_not_retried(connection, fake):
    fake.fail("POST", 400, path="/api/", message="url must use HTTPS")
    with pytest.raises(PdkError, match="400: url must use HTTPS"):
        PdkClient(connection).create_hook({"name": "x"})
    assert fake.count("POST", "/api/") == 1


def test_slow_answers_time_out_and_are_retried(connection, fake):
    fake.slow("GET", 1.5, path="/api/")
    assert PdkClient(connection).list_hooks() == []
    assert fake.count("GET", "/api/") == 2


def test_an_answer_that_never_comes_in_time_is_an_error(connection, fake):
    fake.slow("GET", 1.0, times=3, path="/api/")
    with pytest.raises(PdkError, match="did not answer: timed out"):
        PdkClient(connection).list_hooks()


# --- push and delete ------------------------------------------------------------------------------


def test_push_creates_the_hook_with_pdk_s_whole_object(connection, fake):
    subscription = pushed(connection, scope=["1070000"], secrecy_level=2)
    hook = fake.hooks[subscription.remote_id]
    assert hook["url"] == subscription.endpoint.url and hook["secret"] == subscription.endpoint.secret
    assert (hook["scope"], hook["events"], hook["secrecyLevel"], hook["authentication"]) == (
        ["1070000"],
        PANEL_EVENTS,
        2,
        {"type": "None"},
    )
    assert subscription.last_synced_at is not None and subscription.last_error == ""


def test_push_of_an_edit_puts_the_whole_object(connection, fake):
    subscription = pushed(connection)
    subscription.name, subscription.events = "Renamed", ["door.request.denied"]
    subscription.save_config()
    assert sync.push(subscription.pk) == "updated"
    hook = fake.hooks[subscription.remote_id]
    assert (hook["name"], hook["events"], hook["active"]) == ("Renamed", ["door.request.denied"], True)
    assert fake.count("PUT") == 1


def test_push_failure_is_kept_with_pdk_s_message(connection, fake):
    subscription = new_subscription(connection)
    fake.fail("POST", 422, path="/api/", message="scope panel 1070009 is not in this organization")
    assert sync.push(subscription.pk) == "failed"
    subscription.refresh_from_db()
    assert subscription.sync_state == State.ERROR
    assert subscription.last_error == (
        "creating a hook: PDK answered 422: scope panel 1070009 is not in this organization"
    )


def test_a_lost_create_answer_is_adopted_not_duplicated(connection, fake):
    subscription = new_subscription(connection)
    fake.slow("POST", 1.0, path="/api/")  # PDK creates the hook but the answer comes too late
    fake.fail("POST", 400, path="/api/", message="no")  # the client's retry must not matter here
    assert sync.push(subscription.pk) == "failed"
    wait_until(lambda: fake.hooks, message="the slow create to land")
    assert sync.push(subscription.pk) == "updated"
    subscription.refresh_from_db()
    assert list(fake.hooks) == [subscription.remote_id]


def test_delete_is_confirmed_by_pdk_before_the_row_goes(connection, fake):
    subscription = pushed(connection)
    hook_id, endpoint = subscription.remote_id, subscription.endpoint
    subscription.request_delete()
    assert PdkSubscription.objects.get().sync_state == State.PENDING_DELETE
    assert sync.delete(subscription.pk) == "deleted"
    assert hook_id not in fake.hooks and not PdkSubscription.objects.exists()
    endpoint.refresh_from_db()
    assert not endpoint.active


def test_failing_delete_keeps_the_row_pending_with_the_error(connection, fake):
    subscription = pushed(connection)
    subscription.request_delete()
    fake.fail("DELETE", 500, times=10, message="database unavailable")
    assert sync.delete(subscription.pk) == "failed"
    subscription.refresh_from_db()
    assert subscription.sync_state == State.PENDING_DELETE
    assert "PDK answered 500: database unavailable" in subscription.last_error
    assert subscription.remote_id in fake.hooks
    # The next reconcile tries again, and PDK's confirmation removes the row.
    fake.faults.clear()
    assert sync.reconcile(connection).counts["deleted"] == 1
    assert not PdkSubscription.objects.exists() and not fake.hooks


def test_deleting_in_the_admin_marks_pending_delete(admin_client, connection):
    subscription = new_subscription(connection)
    url = reverse("admin:subscriptions_pdksubscription_delete", args=[subscription.pk])
    assert admin_client.post(url, {"post": "yes"}).status_code == 302
    assert PdkSubscription.objects.get().sync_state == State.PENDING_DELETE


# --- reconcile ----------------------------------------------------------------------------------


def test_reconcile_imports_pdk_only_hooks_as_unmanaged_and_never_deletes_them(connection, fake):
    hook_id = fake.add_hook(name="Integrator", scope="ou", events=["ou.created"])
    assert sync.reconcile(connection).counts["imported"] == 1
    imported = PdkSubscription.objects.get()
    assert (imported.managed, imported.remote_id, imported.name, imported.events) == (
        False,
        hook_id,
        "Integrator",
        ["ou.created"],
    )
    assert (imported.odometer, imported.sync_state, imported.endpoint) == (7, State.IN_SYNC, None)
    fake.hooks[hook_id]["name"] = "Integrator v2"
    assert sync.reconcile(connection).counts["imported"] == 0
    imported.refresh_from_db()
    assert imported.name == "Integrator v2" and imported.sync_state == State.IN_SYNC
    assert fake.count("DELETE") == 0 and fake.count("PUT") == 0 and hook_id in fake.hooks


def test_reconcile_pushes_local_changes_not_yet_pushed(connection, fake):
    fresh = new_subscription(connection, name="Never pushed")
    edited = pushed(connection, name="Edited")
    edited.name = "Edited again"
    edited.save_config()  # its push task never ran (broker down, say)
    counts = sync.reconcile(connection).counts
    assert (counts["created"], counts["updated"]) == (1, 1)
    fresh.refresh_from_db()
    edited.refresh_from_db()
    assert fake.hooks[fresh.remote_id]["name"] == "Never pushed"
    assert fake.hooks[edited.remote_id]["name"] == "Edited again"
    assert {fresh.sync_state, edited.sync_state} == {State.IN_SYNC}


def test_reconcile_marks_a_hook_changed_in_pdk_drifted_and_reapplies_the_portal_config(connection, fake):
    subscription = pushed(connection)
    hook = fake.hooks[subscription.remote_id]
    hook.update(name="Changed in PDK", events=["door.request.allowed"], secret="someone-elses", secrecyLevel=0)

    summary = sync.reconcile(connection)

    assert summary.counts["drifted"] == 1
    subscription.refresh_from_db()
    assert subscription.sync_state == State.DRIFTED and subscription.drift_detected_at is not None
    assert subscription.drift["name"] == {"portal": "Front doors", "pdk": "Changed in PDK"}
    assert subscription.drift["events"]["pdk"] == ["door.request.allowed"]
    assert subscription.drift["secrecyLevel"] == {"portal": 1, "pdk": 0}
    assert subscription.drift["secret"] == {"portal": "(hidden)", "pdk": "(differs)"}
    assert "someone-elses" not in str(subscription.drift)
    hook = fake.hooks[subscription.remote_id]
    assert (hook["name"], hook["events"], hook["secret"]) == ("Front doors", PANEL_EVENTS, subscription.secret)
    # The next reconcile finds both sides equal again; the drift stays on record.
    sync.reconcile(connection)
    subscription.refresh_from_db()
    assert subscription.sync_state == State.IN_SYNC and "name" in subscription.drift


def test_reconcile_recreates_a_managed_hook_deleted_in_pdk(connection, fake):
    subscription = pushed(connection)
    del fake.hooks[subscription.remote_id]
    assert sync.reconcile(connection).counts["drifted"] == 1
    subscription.refresh_from_db()
    assert subscription.remote_id in fake.hooks and subscription.drift["hook"]["pdk"] == "deleted on PDK"
    assert PdkSubscription.objects.count() == 1  # the recreated hook is not imported as well


def test_reconcile_pulls_odometer_and_user_id(connection, fake):
    subscription = pushed(connection)
    fake.hooks[subscription.remote_id]["odometer"] = 123
    sync.reconcile(connection)
    subscription.refresh_from_db()
    assert (subscription.odometer, subscription.user_id) == (123, fake_pdk.USER_ID)
    assert subscription.sync_state == State.IN_SYNC


def test_reconcile_shows_subscriptions_past_expiry_inactive(connection, fake):
    subscription = pushed(connection, expires_at=timezone.now() + timedelta(hours=1))
    PdkSubscription.objects.filter(pk=subscription.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    fake.hooks[subscription.remote_id]["active"] = False  # PDK switched it off at expiresAt

    summary = sync.reconcile(connection)

    subscription.refresh_from_db()
    assert summary.counts["expired"] == 1 and summary.counts["drifted"] == 0
    assert not subscription.active and subscription.sync_state == State.IN_SYNC
    assert "expiresAt" not in subscription.pdk_object()  # PDK refuses a past expiry on update


def test_reconcile_failure_to_list_is_kept_on_the_connection(connection, fake):
    connection.client_secret = "rotated-elsewhere"
    connection.save()
    summary = sync.reconcile(connection)
    connection.refresh_from_db()
    assert summary.counts["failed"] == 1
    assert "fetching a token: PDK answered 401" in connection.last_error


def test_pdk_sync_prints_what_it_did(connection, fake):
    fake.add_hook()
    new_subscription(connection)
    drifting = pushed(connection, name="Drifting")
    fake.hooks[drifting.remote_id]["active"] = False
    out = io.StringIO()
    call_command("pdk_sync", "--connection", "HQ", stdout=out)
    assert (
        "HQ: created 1, updated 0, imported 1, drifted 1, deleted 0, removed 0, expired 0, failed 0" in out.getvalue()
    )


def test_pdk_sync_exits_non_zero_when_something_failed(connection, fake):
    new_subscription(connection)
    fake.fail("POST", 400, path="/api/", message="url is not reachable")
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 failure"):
        call_command("pdk_sync", stdout=out)
    assert "failed 1" in out.getvalue() and "url is not reachable" in out.getvalue()


# --- secret rotation ------------------------------------------------------------------------


def signed_post(post, endpoint, secret):
    body = fixture_bytes("pdk", "door.request.allowed.json")
    return post(endpoint, body, {"X-PDK-SIGNATURE": pdk_signature(secret, body)}, sign=False).status_code


def test_rotation_accepts_old_and_new_secret_during_the_overlap_and_only_the_new_after(
    connection, fake, post, settings
):
    subscription = pushed(connection)
    old = subscription.secret
    subscription.rotate_secret()
    new = subscription.secret
    assert new != old and subscription.rotation_pending
    endpoint = Endpoint.objects.get(pk=subscription.endpoint_id)

    # Before PDK has the new secret it still signs with the old one: both are accepted.
    assert signed_post(post, endpoint, old) == 200
    assert signed_post(post, endpoint, new) == 200

    settings.PORTAL_PDK_SUBSCRIPTION_OVERLAP_HOURS = 1 / 3600  # the window starts when PDK confirms
    assert sync.push(subscription.pk) == "updated"
    assert fake.hooks[subscription.remote_id]["secret"] == new
    subscription.refresh_from_db()
    assert not subscription.rotation_pending
    assert signed_post(post, endpoint, old) == 200  # deliveries PDK signed just before the switch

    time.sleep(1.1)
    assert signed_post(post, endpoint, old) == 401
    assert signed_post(post, endpoint, new) == 200
    assert signed_post(post, endpoint, "never-valid") == 401


def test_rotation_overlap_defaults_to_24_hours(connection):
    subscription = new_subscription(connection)
    subscription.rotate_secret()
    endpoint = Endpoint.objects.get(pk=subscription.endpoint_id)
    window = endpoint.previous_secret_expires_at - timezone.now()
    assert timedelta(hours=23, minutes=59) < window <= timedelta(hours=24)
    assert endpoint.valid_secrets() == [subscription.secret, endpoint.previous_secret]
    assert endpoint.valid_secrets(now=timezone.now() + timedelta(hours=25)) == [subscription.secret]


# --- admin actions --------------------------------------------------------------------------


def run_action(admin_client, model, action, pks):
    url = reverse(f"admin:subscriptions_{model}_changelist")
    return admin_client.post(url, {"action": action, "_selected_action": pks}, follow=True)


def test_test_connection_action_says_what_worked_and_what_failed(admin_client, connection, fake):
    response = run_action(admin_client, "pdkconnection", "test_connection", [connection.pk])
    assert "OK: token fetched, 0 hook(s) on PDK." in response.content.decode()

    fake.fail("GET", 403, path="/api/", message="client lacks hooks:read")
    response = run_action(admin_client, "pdkconnection", "test_connection", [connection.pk])
    assert "could not list hooks" in response.content.decode()
    assert "client lacks hooks:read" in response.content.decode()

    PdkConnection.objects.filter(pk=connection.pk).update(client_secret="wrong")
    response = run_action(admin_client, "pdkconnection", "test_connection", [connection.pk])
    assert "could not get a token" in response.content.decode()


def test_connection_admin_never_shows_the_client_secret(admin_client, connection):
    page = admin_client.get(reverse("admin:subscriptions_pdkconnection_change", args=[connection.pk]))
    assert fake_pdk.CLIENT_SECRET not in page.content.decode()


def test_rotate_and_deactivate_actions(admin_client, connection):
    subscription = new_subscription(connection)
    old = subscription.secret
    run_action(admin_client, "pdksubscription", "rotate_secret", [subscription.pk])
    run_action(admin_client, "pdksubscription", "deactivate", [subscription.pk])
    subscription.refresh_from_db()
    assert subscription.secret != old and subscription.endpoint.previous_secret == old
    assert not subscription.active and subscription.sync_state == State.PENDING_PUSH


def test_subscription_list_shows_state_and_error(admin_client, connection, fake):
    subscription = new_subscription(connection)
    fake.fail("POST", 400, path="/api/", message="events may not be mixed")
    sync.push(subscription.pk)
    page = admin_client.get(reverse("admin:subscriptions_pdksubscription_changelist")).content.decode()
    assert "error" in page and "events may not be mixed" in page


def test_events_posted_to_a_subscription_endpoint_are_stored(connection, post):
    subscription = new_subscription(connection)
    assert signed_post(post, subscription.endpoint, subscription.secret) == 200
    assert Event.objects.filter(endpoint=subscription.endpoint).count() == 1


def test_imported_hooks_are_shown_read_only_without_their_password(admin_client, connection, fake):
    auth = {"type": "Basic", "user": "integrator", "password": "their-password"}
    fake.add_hook(name="Integrator", authentication=auth)
    sync.reconcile(connection)
    imported = PdkSubscription.objects.get()
    page = admin_client.get(reverse("admin:subscriptions_pdksubscription_change", args=[imported.pk]))
    text = page.content.decode()
    assert page.status_code == 200 and "Integrator" in text
    assert "their-password" not in text and "their-own-secret" not in text
    assert 'name="name"' not in text  # no editable inputs


def test_reconcile_task_reports_per_connection(connection, fake):
    from subscriptions import tasks

    fake.add_hook()
    result = tasks.reconcile_connection(connection.pk)
    assert (result["imported"], result["failed"], result["errors"]) == (1, 0, [])
    assert tasks.reconcile_connection(987654) is None

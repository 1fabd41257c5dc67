"""Exactly one event per vendor event, however and however often it arrives."""

import json
import threading

import pytest
from django.urls import reverse

from events.models import Delivery, Event, RejectedRequest
from tests.helpers import http_post, make_endpoint
from tests.vendors import SIGNERS, fixture_bytes, with_changes


def test_duplicate_delivery_returns_same_event(post, endpoint_for):
    endpoint = endpoint_for("seam")
    body = fixture_bytes("seam", "lock.unlocked.json")

    first = post(endpoint, body).json()
    second = post(endpoint, body).json()  # Seam retries with a new timestamp and signature

    assert first["duplicate"] is False and second["duplicate"] is True
    assert first["event_id"] == second["event_id"]
    assert Event.objects.count() == 1
    assert list(Delivery.objects.order_by("pk").values_list("duplicate", flat=True)) == [False, True]


def test_same_pdk_id_under_another_topic_is_another_event(post, endpoint_for):
    endpoint = endpoint_for("pdk")
    forced = fixture_bytes("pdk", "door.alarm.forced.json")
    cleared = fixture_bytes("pdk", "door.alarm.forced.cleared.json")
    assert json.loads(forced)["id"] == json.loads(cleared)["id"]

    ids = {post(endpoint, forced).json()["event_id"], post(endpoint, cleared).json()["event_id"]}

    assert len(ids) == 2


def test_same_pdk_id_at_another_time_is_another_event(post, endpoint_for):
    endpoint = endpoint_for("pdk")
    body = fixture_bytes("pdk", "door.request.allowed.json")
    later = json.loads(body)
    later["metadata"]["occurred"] += 1000

    first = post(endpoint, body).json()
    second = post(endpoint, json.dumps(later).encode()).json()

    assert first["event_id"] != second["event_id"]


def test_pdk_event_without_id_is_identified_by_its_content(post, endpoint_for):
    endpoint = endpoint_for("pdk")
    body = fixture_bytes("pdk", "panel.disconnected.json")
    reordered = json.dumps(dict(reversed(list(json.loads(body).items())))).encode()

    first = post(endpoint, body).json()
    same_content = post(endpoint, reordered).json()
    other = post(endpoint, with_changes(body, ip="100.64.78.83")).json()

    assert same_content == {**first, "duplicate": True}
    assert other["event_id"] != first["event_id"]


def test_spk_events_are_identified_by_envelope_id(post, endpoint_for):
    endpoint = endpoint_for("spk")
    body = fixture_bytes("spk", "KeyAdded.json")

    first = post(endpoint, body).json()
    redelivered = post(endpoint, with_changes(body, time="2030-01-01T00:00:00Z")).json()

    assert redelivered == {**first, "duplicate": True}


def test_same_event_to_two_endpoints_of_a_vendor_is_one_event(post, endpoint_for):
    body = fixture_bytes("pdk", "door.request.denied.json")
    first = post(endpoint_for("pdk"), body).json()
    second = post(endpoint_for("pdk"), body).json()
    assert second == {**first, "duplicate": True}


def test_shadow_update_inner_json_is_stored_parsed(post, endpoint_for):
    endpoint = endpoint_for("spk")
    answer = post(endpoint, fixture_bytes("spk", "ShadowUpdateWithDelta.json")).json()

    detail = Event.objects.get(pk=answer["event_id"]).payload["detail"]

    for name in ("reportedState", "desiredState", "deltaState", "metadata"):
        assert isinstance(detail[name], dict), name
    assert detail["deltaState"]


def test_shadow_update_with_unparseable_inner_json_is_kept_as_text_and_flagged(post, endpoint_for):
    endpoint = endpoint_for("spk")
    envelope = json.loads(fixture_bytes("spk", "ShadowUpdate.json"))
    envelope["detail"]["deltaState"] = "{not json"

    response = post(endpoint, json.dumps(envelope).encode())

    assert response.status_code == 200
    event = Event.objects.get(pk=response.json()["event_id"])
    assert event.payload["detail"]["deltaState"] == "{not json"
    assert isinstance(event.payload["detail"]["reportedState"], dict)
    assert len(event.payload_flags) == 1 and "deltaState" in event.payload_flags[0]


def test_text_postgresql_cannot_hold_is_replaced_in_the_payload_but_kept_in_the_raw_body(post, endpoint_for):
    endpoint = endpoint_for("seam")
    body = with_changes(fixture_bytes("seam", "lock.locked.json"), customer_key="a\u0000b\udc00c")

    response = post(endpoint, body)

    assert response.status_code == 200
    event = Event.objects.get(pk=response.json()["event_id"])
    assert event.payload["customer_key"] == "a\ufffdb\ufffdc"
    assert bytes(Delivery.objects.get(event=event).body) == body


def test_credentials_are_redacted_from_stored_headers(post, endpoint_for):
    bearer = endpoint_for("spk", token_header="", secret="bearer-secret-123")
    body = fixture_bytes("spk", "OwnerSet.json")

    post(bearer, body, {"Authorization": "Bearer bearer-secret-123", "Cookie": "sessionid=abc"}, sign=False)
    post(bearer, body, {"Authorization": "Bearer wrong"}, sign=False)

    stored = json.dumps(list(Delivery.objects.values_list("headers", flat=True)))
    rejected = json.dumps(list(RejectedRequest.objects.values_list("headers", flat=True)))
    for text in (stored, rejected):
        assert "bearer-secret-123" not in text and "wrong" not in text and "sessionid" not in text
        assert "[redacted]" in text


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_copies_of_one_event_store_it_once(live_server):
    endpoint = make_endpoint("pdk")
    body = fixture_bytes("pdk", "door.alarm.forced.json")
    barrier = threading.Barrier(10)
    answers = []

    def deliver():
        barrier.wait()
        answers.append(http_post(live_server.url, endpoint.path, body, SIGNERS["pdk"](body)))

    threads = [threading.Thread(target=deliver) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [status for status, _ in answers] == [200] * 10
    assert len({answer["event_id"] for _, answer in answers}) == 1
    assert sorted(answer["duplicate"] for _, answer in answers) == [False] + [True] * 9
    assert Event.objects.count() == 1
    assert Delivery.objects.count() == 10


def test_sender_address_comes_from_a_trusted_proxy_only(post, endpoint_for, settings):
    endpoint = endpoint_for("pdk")
    body = fixture_bytes("pdk", "door.request.allowed.json")
    forwarded = {"X-Forwarded-For": "203.0.113.9, 198.51.100.7"}

    post(endpoint, body, forwarded)
    settings.PORTAL_TRUSTED_PROXIES = ["127.0.0.1"]
    post(endpoint, body, forwarded)

    assert list(Delivery.objects.order_by("pk").values_list("remote_addr", flat=True)) == ["127.0.0.1", "198.51.100.7"]


def test_unverified_endpoint_cannot_claim_the_ids_of_verified_deliveries(post, endpoint_for):
    open_endpoint = endpoint_for("spk", secret="", token_header="", partner_id="", unauthenticated=True)
    verified = endpoint_for("spk")
    body = fixture_bytes("spk", "AlarmTriggered.json")

    squatted = post(open_endpoint, body, sign=False).json()
    real = post(verified, body).json()

    assert real["duplicate"] is False and real["event_id"] != squatted["event_id"]
    assert post(open_endpoint, body, sign=False).json() == {**squatted, "duplicate": True}


@pytest.mark.parametrize(
    "changes",
    [
        {"timestamp": "9999-12-31T23:59:59-14:00"},
        {"timestamp": "0001-01-01T00:00:00+14:00"},
        {"timestamp": "1970-01-01T00:00:00Z"},
        {"timestamp": "YYYY-MM-DDThh:mm:ssZ"},
    ],
)
def test_implausible_vendor_time_is_stored_as_unknown(post, endpoint_for, changes):
    endpoint = endpoint_for("pdk")
    body = with_changes(fixture_bytes("pdk", "panel.connected.json"), **changes)

    response = post(endpoint, body)

    assert response.status_code == 200
    assert Event.objects.get(pk=response.json()["event_id"]).occurred_at is None


@pytest.mark.parametrize(
    "inner",
    ['{"a": NaN}', '{"a": 1e999}', '{"a": "\\u0000"}', '{"a": "\\ud800"}', "", "[1, 2"],
)
def test_shadow_update_inner_json_never_turns_a_delivery_away(post, endpoint_for, inner):
    endpoint = endpoint_for("spk")
    envelope = json.loads(fixture_bytes("spk", "ShadowUpdate.json"))
    envelope["detail"]["reportedState"] = inner

    response = post(endpoint, json.dumps(envelope).encode())

    assert response.status_code == 200, response.json()
    event = Event.objects.get(pk=response.json()["event_id"])
    json.dumps(event.payload)  # what was stored reads back as JSON


@pytest.mark.parametrize(
    ("source", "fixture", "secret"),
    [
        ("spk", "RtspCameraRegistered.json", "password"),
        ("spk", "CameraRegistered.json", "registrationCode"),
        ("seam", "access_code.code_changed.json", "code"),
    ],
)
def test_secrets_in_payloads_are_redacted_in_the_event_and_the_admin(
    admin_client, post, endpoint_for, source, fixture, secret
):
    body = fixture_bytes(source, fixture)
    secret_values = set(_values_of(json.loads(body), secret))
    assert secret_values, f"the fixture carries a {secret}"
    event_id = post(endpoint_for(source), body).json()["event_id"]

    event = Event.objects.get(pk=event_id)
    delivery = event.deliveries.get()
    stored = json.dumps(event.payload)
    event_page = admin_client.get(reverse("admin:events_event_change", args=[event.pk])).content.decode()
    delivery_page = admin_client.get(reverse("admin:events_delivery_change", args=[delivery.pk])).content.decode()
    for value in secret_values:
        assert value not in stored and value not in event_page and value not in delivery_page
    assert "[redacted]" in delivery_page
    assert bytes(delivery.body) == body  # the raw delivery keeps the bytes until it is pruned


def _values_of(value, name):
    if isinstance(value, dict):
        for key, child in value.items():
            if key == name and isinstance(child, str):
                yield child
            else:
                yield from _values_of(child, name)
    elif isinstance(value, list):
        for child in value:
            yield from _values_of(child, name)

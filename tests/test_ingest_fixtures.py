"""Every documented vendor sample, posted over HTTP with a valid signature, is stored as it should be."""

import hashlib
import json
from datetime import UTC, datetime

import pytest

from events.models import Delivery, Event
from tests.helpers import http_post, make_endpoint
from tests.vendors import SIGNERS, fixture_files

pytestmark = pytest.mark.django_db(transaction=True)


def canonical_digest(payload) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def from_ms(value) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def from_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def expected_pdk(payload):
    metadata = payload.get("metadata") or {}
    if "body" in payload and payload.get("id"):
        key = f"{payload['topic']}:{payload['panelId']}:{payload['id']}:{metadata.get('occurred', '')}"
    else:
        key = canonical_digest(payload)
    occurred = metadata.get("occurred") or (payload.get("body") or {}).get("occurred")
    return payload["topic"], key, from_ms(occurred) if occurred else None


def expected_spk(payload):
    data = payload["detail"].get("data") or {}
    when = data.get("timestamp") or payload.get("time")
    return payload["detail-type"], payload.get("id") or canonical_digest(payload), from_iso(when) if when else None


def expected_seam(payload):
    return payload["event_type"], payload["event_id"], from_iso(payload["occurred_at"])


EXPECTED = {"pdk": expected_pdk, "spk": expected_spk, "seam": expected_seam}
ALL_FIXTURES = [(vendor, path) for vendor in ("pdk", "spk", "seam") for path in fixture_files(vendor)]


def test_every_documented_sample_is_present():
    counts = {vendor: len(fixture_files(vendor)) for vendor in ("pdk", "spk", "seam")}
    assert counts["pdk"] == 70, "the PDK seed documents 70 topics"
    assert counts["spk"] >= 14 and counts["seam"] >= 3


@pytest.mark.parametrize(("vendor", "path"), ALL_FIXTURES, ids=[f"{v}/{p.name}" for v, p in ALL_FIXTURES])
def test_signed_sample_is_stored_once_with_its_identity(live_server, vendor, path):
    endpoint = make_endpoint(vendor)
    body = path.read_bytes()
    headers = SIGNERS[vendor](body)

    status, answer = http_post(live_server.url, endpoint.path, body, headers)

    assert status == 200, answer
    assert answer["duplicate"] is False
    event = Event.objects.get(pk=answer["event_id"])
    event_type, dedup_key, occurred_at = EXPECTED[vendor](json.loads(body))
    assert (event.source, event.event_type, event.dedup_key) == (vendor, event_type, dedup_key)
    assert event.occurred_at == occurred_at
    assert event.status == Event.Status.PENDING
    assert event.endpoint_id == endpoint.pk
    delivery = Delivery.objects.get(event=event)
    assert bytes(delivery.body) == body
    assert delivery.remote_addr == "127.0.0.1"
    if vendor == "seam":
        assert event.message_id == headers["svix-id"]

    status, again = http_post(live_server.url, endpoint.path, body, SIGNERS[vendor](body))
    assert (status, again["event_id"], again["duplicate"]) == (200, event.pk, True)
    assert Event.objects.count() == 1 and Delivery.objects.count() == 2


def test_all_pdk_samples_are_distinct_events_although_they_share_ids(client, db):
    endpoint = make_endpoint("pdk")
    for path in fixture_files("pdk"):
        body = path.read_bytes()
        response = client.post(endpoint.path, body, content_type="application/json", headers=SIGNERS["pdk"](body))
        assert response.status_code == 200
        assert response.json()["duplicate"] is False, path.name
    assert Event.objects.count() == 70

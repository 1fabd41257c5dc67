"""Every way a request can be wrong gets a clear 4xx (or a 503 the vendor retries), never a 500."""

import json
import time

import pytest

from events.models import Delivery, Event, RejectedRequest
from tests.helpers import http_post
from tests.processes import free_port, gunicorn, port_open, process_env, wait_until
from tests.vendors import SPK_TOKEN, fixture_bytes, with_changes

pytestmark = pytest.mark.django_db


def assert_problem(response, status: int, mentions: str = ""):
    assert response.status_code == status, response.content
    answer = response.json()
    assert answer["error"] and answer["detail"]
    assert mentions in answer["detail"]
    assert not Event.objects.exists()


@pytest.mark.parametrize(
    ("source", "body", "mentions"),
    [
        ("pdk", b"not json at all", "not valid JSON"),
        ("pdk", b"", "empty"),
        ("pdk", b"[1, 2]", "JSON list"),
        ("pdk", b'"text"', "JSON str"),
        ("pdk", b'{"id": "1", "body": {}}', "'topic'"),
        ("pdk", b'{"topic": 17}', "'topic'"),
        ("pdk", b'{"topic": ""}', "'topic'"),
        ("pdk", b'{"topic": "door.request.allowed", "n": NaN}', "NaN"),
        ("pdk", b'{"topic": "door.request.allowed", "n": 1e400}', "out of range"),
        ("pdk", b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        ("pdk", b'{"topic": "' + b"t" * 151 + b'"}', "longer than 150"),
        ("spk", b'{"detail-type": "KeyAdded", "detail": {}}', "'source'"),
        ("spk", b'{"source": "spk.api", "detail": {}}', "'detail-type'"),
        ("spk", b'{"source": "spk.api", "detail-type": "KeyAdded"}', "'detail'"),
        ("spk", b'{"source": "spk.api", "detail-type": "KeyAdded", "detail": "x"}', "'detail'"),
        ("seam", b'{"event_type": "lock.locked"}', "'event_id'"),
        ("seam", b'{"event_id": "e1"}', "'event_type'"),
    ],
)
def test_body_that_cannot_be_an_event_is_400_naming_the_problem(post, endpoint_for, source, body, mentions):
    endpoint = endpoint_for(source, partner_id="") if source == "spk" else endpoint_for(source)
    assert_problem(post(endpoint, body), 400, mentions)
    assert RejectedRequest.objects.get().status_code == 400


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_content_type_other_than_json_is_415(post, endpoint_for, content_type):
    endpoint = endpoint_for("pdk")
    assert_problem(post(endpoint, fixture_bytes("pdk", "door.request.allowed.json"), content_type=content_type), 415)


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/cloudevents+json", ""])
def test_json_content_types_are_accepted(post, endpoint_for, content_type):
    endpoint = endpoint_for("pdk")
    response = post(endpoint, fixture_bytes("pdk", "door.request.allowed.json"), content_type=content_type)
    assert response.status_code == 200


def test_body_over_the_limit_is_413(post, endpoint_for, settings):
    settings.PORTAL_MAX_BODY_BYTES = 1000
    endpoint = endpoint_for("pdk")
    body = json.dumps({"topic": "door.request.allowed", "pad": "x" * 1000}).encode()
    assert_problem(post(endpoint, body), 413, "1000-byte")


def test_body_at_the_limit_is_accepted(post, endpoint_for, settings):
    body = fixture_bytes("pdk", "door.request.allowed.json")
    settings.PORTAL_MAX_BODY_BYTES = len(body)
    assert post(endpoint_for("pdk"), body).status_code == 200


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_other_methods_are_405(client, endpoint_for, method):
    endpoint = endpoint_for("pdk")
    response = getattr(client, method)(endpoint.path)
    assert response.status_code == 405
    assert response.json()["detail"]


def test_unknown_source_is_404(client, endpoint_for):
    endpoint = endpoint_for("pdk")
    response = client.post(f"/webhooks/acme/{endpoint.pk}/", b"{}", content_type="application/json")
    assert response.status_code == 404


@pytest.mark.slow
def test_unreachable_database_is_a_quick_503_never_a_2xx():
    """A real server process whose database does not answer: the vendor is told to retry."""
    port = free_port()
    env = process_env(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/portal",  # nothing listens there
        PORTAL_ENDPOINT_CACHE_SECONDS="0",
    )
    with gunicorn(port, env, "gunicorn-no-database"):
        wait_until(lambda: port_open(port), message="gunicorn to listen")
        body = fixture_bytes("pdk", "door.request.allowed.json")
        started = time.monotonic()
        status, answer = http_post(
            f"http://127.0.0.1:{port}", "/webhooks/pdk/7c2f1f7e-3d4c-4c3b-9e55-2d1f0f0e9a11/", body, {}
        )
        elapsed = time.monotonic() - started
    assert status == 503, answer
    assert answer["error"] == "database_unavailable"
    assert elapsed < 5, "the vendor must not be kept waiting on a dead database"
    assert not Delivery.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        b'{"topic": "a\xed\xa0\x80b", "id": "1"}',  # an encoded surrogate is not UTF-8
        '{"topic": "door.request.allowed"}'.encode("utf-16"),
        b'{"topic": "door.request.allowed", "x": "\xff"}',
    ],
)
def test_body_that_is_not_utf8_is_400(post, endpoint_for, body):
    assert_problem(post(endpoint_for("pdk"), body), 400, "UTF-8")


def test_utf8_byte_order_mark_is_accepted(post, endpoint_for):
    body = b"\xef\xbb\xbf" + fixture_bytes("pdk", "door.request.allowed.json")
    assert post(endpoint_for("pdk"), body).status_code == 200


def test_number_with_too_many_digits_is_named_plainly(post, endpoint_for):
    body = b'{"topic": "x", "n": ' + b"9" * 5000 + b"}"
    assert_problem(post(endpoint_for("pdk"), body), 400, "too many digits")


@pytest.mark.parametrize("status", [413, 415])
def test_refusals_on_a_known_endpoint_are_recorded(post, endpoint_for, settings, status):
    settings.PORTAL_MAX_BODY_BYTES = 10
    endpoint = endpoint_for("pdk")
    content_type = "text/plain" if status == 415 else "application/json"
    post(endpoint, fixture_bytes("pdk", "door.request.allowed.json"), content_type=content_type)
    assert RejectedRequest.objects.get().status_code == status


@pytest.mark.parametrize(
    "shape",
    [lambda p: p.upper(), lambda p: p.replace("-", ""), lambda p: p.rstrip("/")],
    ids=["uppercase", "no-dashes", "no-trailing-slash"],
)
def test_endpoint_url_as_vendors_may_paste_it(post, endpoint_for, shape):
    endpoint = endpoint_for("pdk")
    prefix = "/webhooks/pdk/"
    path = prefix + shape(endpoint.path[len(prefix) :])
    assert post(endpoint, fixture_bytes("pdk", "door.request.allowed.json"), path=path).status_code == 200


@pytest.mark.parametrize("path", ["/webhooks/pdk/not-a-uuid/", "/webhooks/", "/webhooks//pdk/x/"])
def test_post_to_a_malformed_webhook_url_is_a_json_404_not_a_csrf_page(path):
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post(path, b"{}", content_type="application/json")
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_endpoint"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_chunked_bodies_are_read_and_limited():
    """A sender using Transfer-Encoding: chunked (no Content-Length) through the real server."""
    import http.client

    from tests.helpers import make_endpoint
    from tests.vendors import SIGNERS

    endpoint = make_endpoint("spk")
    body = fixture_bytes("spk", "KeyAdded.json")
    port = free_port()
    with gunicorn(port, process_env(PORTAL_MAX_BODY_BYTES="4096"), "gunicorn-chunked"):
        wait_until(lambda: port_open(port), message="gunicorn to listen")

        def send_chunked(payload: bytes):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
            headers = {"Content-Type": "application/json", **SIGNERS["spk"](payload)}
            conn.request("POST", endpoint.path, body=iter([payload[:100], payload[100:]]), headers=headers)
            response = conn.getresponse()
            answer = json.loads(response.read())
            conn.close()
            return response.status, answer

        status, answer = send_chunked(body)
        assert status == 200, answer
        too_big = with_changes(body, padding="x" * 5000)
        status, answer = send_chunked(too_big)
        assert status == 413, answer
    assert bytes(Delivery.objects.get().body) == body


# Found by tests/test_fuzz_ingress.py, kept here by name.


@pytest.mark.parametrize("accept", ["text/html", "", "application/xml;q=0.9", "*/ *"])
def test_any_accept_header_gets_the_json_answer_and_the_event_is_stored(post, endpoint_for, accept):
    response = post(endpoint_for("pdk"), fixture_bytes("pdk", "door.request.allowed.json"), {"Accept": accept})
    assert response.status_code == 200 and response.json()["event_id"]


def test_json_nested_too_deeply_is_a_400_not_a_500(post, endpoint_for):
    body = b'{"topic": "door.request.allowed", "id": "1", "body": ' + b'{"a": ' * 900 + b"1" + b"}" * 901
    assert_problem(post(endpoint_for("spk"), body), 400, "nested deeper")


def test_a_token_sent_in_a_header_the_endpoint_does_not_read_is_not_recorded(client, endpoint_for):
    bearer_endpoint = endpoint_for("spk", token_header="")  # reads Authorization: Bearer only
    body = fixture_bytes("spk", "AlarmTriggered.json")
    response = client.post(
        bearer_endpoint.path, body, content_type="application/json", headers={"X-Api-Key": SPK_TOKEN}
    )
    assert response.status_code == 401
    rejection = RejectedRequest.objects.get()
    assert SPK_TOKEN not in json.dumps(rejection.headers)

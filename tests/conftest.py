"""Shared fixtures: an endpoint per vendor and ways to post to the ingress."""

import http.client
import json
from urllib.parse import urlparse

import pytest

from events.models import Endpoint
from tests.vendors import ENDPOINT_SETTINGS, SIGNERS


def make_endpoint(source: str, **overrides) -> Endpoint:
    settings = {**ENDPOINT_SETTINGS[source], **overrides}
    endpoint = Endpoint(source=source, name=f"{source} test endpoint", **settings)
    endpoint.full_clean()
    endpoint.save()
    return endpoint


@pytest.fixture
def endpoint_for(db):
    return make_endpoint


@pytest.fixture
def post(client):
    """Post a body to an endpoint through Django's test client; signed as its vendor would."""

    def _post(endpoint: Endpoint, body: bytes, headers: dict | None = None, *, sign=True, path=None, **extra):
        all_headers = SIGNERS[endpoint.source](body) if sign else {}
        all_headers.update(headers or {})
        return client.generic(
            "POST",
            path or endpoint.path,
            data=body,
            content_type=extra.pop("content_type", "application/json"),
            headers=all_headers,
            **extra,
        )

    return _post


def http_post(base_url: str, path: str, body: bytes, headers: dict, timeout: float = 15) -> tuple[int, dict]:
    """A real HTTP POST over a socket; returns the status and the JSON answer."""
    url = urlparse(base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = {"raw": raw.decode("utf-8", "replace")}
    return response.status, answer

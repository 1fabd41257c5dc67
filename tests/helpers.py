"""Helpers shared by the tests: making endpoints and posting to the ingress over real HTTP."""

import http.client
import json
from urllib.parse import urlparse

from events.models import Endpoint
from tests.vendors import ENDPOINT_SETTINGS


def make_endpoint(source: str, **overrides) -> Endpoint:
    settings = {**ENDPOINT_SETTINGS[source], **overrides}
    endpoint = Endpoint(source=source, name=f"{source} test endpoint", **settings)
    endpoint.full_clean()
    endpoint.save()
    return endpoint


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

"""Shared fixtures: an endpoint per vendor and a way to post to the ingress."""

import pytest

from events.models import Endpoint
from tests.helpers import make_endpoint
from tests.vendors import SIGNERS


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

"""ProdataKey (PDK) cloud panels: X-PDK-SIGNATURE verification, event identity, handlers."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from events.sources.base import (
    AuthenticationFailed,
    IdentifiedEvent,
    Inbound,
    bounded_key,
    canonical_sha256,
    first_time,
    optional_id,
    require_string,
    secrets_match,
    time_from_epoch_ms,
    time_from_iso,
)

if TYPE_CHECKING:
    from events.models import Endpoint

NAME = "pdk"
LABEL = "ProdataKey"
SIGNATURE_HEADER = "X-PDK-SIGNATURE"

# Topic -> handler(event). The building model fills this table; until then every topic ends
# "unhandled", visible and replayable in the admin.
HANDLERS: dict[str, Any] = {}
# Topic -> why the portal deliberately does nothing with it.
IGNORED: dict[str, str] = {}


def authenticate(inbound: Inbound, endpoint: Endpoint) -> None:
    if not (endpoint.secret or endpoint.basic_username):
        raise AuthenticationFailed("the endpoint has no verification configured")
    if endpoint.secret:
        received = inbound.headers.get(SIGNATURE_HEADER)
        if not received:
            raise AuthenticationFailed(f"missing {SIGNATURE_HEADER} header")
        if not secrets_match(received.strip().lower(), signature(endpoint.secret, inbound.body)):
            raise AuthenticationFailed(f"{SIGNATURE_HEADER} does not match the body")
    if endpoint.basic_username:
        _check_basic(inbound.headers.get("Authorization", ""), endpoint)


def _check_basic(header: str, endpoint: Endpoint) -> None:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token:
        raise AuthenticationFailed("missing Basic credentials")
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise AuthenticationFailed("malformed Basic credentials") from None
    user_ok = secrets_match(user, endpoint.basic_username)
    password_ok = secrets_match(password, endpoint.basic_password)
    if not (sep and user_ok and password_ok):
        raise AuthenticationFailed("Basic credentials do not match")


def signature(secret: str, body: bytes) -> str:
    """The hex HMAC-SHA1 of the raw body, as PDK computes it."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha1).hexdigest()


def identify(inbound: Inbound) -> IdentifiedEvent:
    payload = inbound.payload
    topic = require_string(payload, "topic")
    metadata = payload.get("metadata") if isinstance(payload.get("metadata"), dict) else {}
    body = payload.get("body") if isinstance(payload.get("body"), dict) else {}
    event_id = optional_id(payload.get("id"))
    if "body" in payload and event_id:
        # Panel events: the documented samples reuse one id across topics, so the topic and the
        # occurrence time are part of the identity.
        occurred = optional_id(metadata.get("occurred")) or ""
        dedup_key = bounded_key(f"{topic}:{event_id}:{occurred}")
    else:
        # Organization events and panel.connected/disconnected carry no per-event id.
        dedup_key = canonical_sha256(payload)
    occurred_at = first_time(
        time_from_epoch_ms(metadata.get("occurred")),
        time_from_epoch_ms(body.get("occurred")),
        time_from_iso(payload.get("timestamp")),
    )
    return IdentifiedEvent(event_type=topic, dedup_key=dedup_key, occurred_at=occurred_at, payload=payload)


def validate(event_type: str, payload: dict[str, Any]) -> str | None:
    """The vendor publishes no schema to hold its events to: nothing to check before handling."""
    return None


def endpoint_problems(endpoint: Endpoint) -> dict[str, str]:
    problems = {}
    if not (endpoint.secret or endpoint.basic_username):
        problems["secret"] = "A PDK endpoint needs the subscription's secret, Basic credentials, or both."
    if bool(endpoint.basic_username) != bool(endpoint.basic_password):
        problems["basic_password"] = "Basic authentication needs both a user and a password."
    if endpoint.basic_username and ":" in endpoint.basic_username:
        problems["basic_username"] = "A Basic user name cannot contain ':'."
    for name in ("token_header", "partner_id"):
        if getattr(endpoint, name):
            problems[name] = "Only SmartphoneKey endpoints use this setting."
    if endpoint.unauthenticated:
        problems["unauthenticated"] = "PDK signs every delivery: configure its secret instead."
    return problems


def describe_verification(endpoint: Endpoint) -> str:
    parts = []
    if endpoint.secret:
        parts.append(f"HMAC-SHA1 in {SIGNATURE_HEADER}")
    if endpoint.basic_username:
        parts.append(f"Basic auth as {endpoint.basic_username!r}")
    return " + ".join(parts) or "not configured: rejects everything"


def secret_headers(endpoint: Endpoint) -> set[str]:
    """Headers beyond Authorization and Cookie that carry a credential: none."""
    return set()


def sign(endpoint: Endpoint, body: bytes) -> dict[str, str]:
    """The headers PDK would send with this body (for send_fixture and demos)."""
    headers = {}
    if endpoint.secret:
        headers[SIGNATURE_HEADER] = signature(endpoint.secret, body)
    if endpoint.basic_username:
        credentials = f"{endpoint.basic_username}:{endpoint.basic_password}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
    return headers

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
from portal import domain
from portal.models import Placement

if TYPE_CHECKING:
    from events.models import Endpoint

NAME = "pdk"
LABEL = "ProdataKey"
SIGNATURE_HEADER = "X-PDK-SIGNATURE"


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


# --- handlers: PDK topics -> domain verbs ------------------------------------------------------
# Only handlers touch the building model, and only through portal.domain.


def _when(event):
    return event.occurred_at or event.received_at


def _panel(event):
    return domain.placement(Placement.Kind.PDK_PANEL, str(event.payload["panelId"]))


def _door(event):
    """The door an event is about: PDK names a door by panel id and door id."""
    body, metadata = event.payload.get("body") or {}, event.payload.get("metadata") or {}
    panel = _panel(event)
    name = metadata.get("doorName") if isinstance(metadata.get("doorName"), str) else ""
    return domain.lock(NAME, f"{panel.external_id}:{body['doorId']}", name=name, place=panel)


def _door_subject(lock) -> str:
    return f"pdk:door:{lock.external_id}"


def _door_request(result: str):
    def handle(event):
        door, body = _door(event), event.payload["body"]
        person = body.get("personId")
        domain.record_activity(
            event,
            door,
            _when(event),
            action="request",
            result=result,
            method=str(body.get("requestFactor") or ""),
            actor=f"PDK person {person}" if person is not None else "",
            details={k: v for k, v in body.items() if k not in ("doorId", "personId", "requestFactor")},
        )
        if result == "duress":
            domain.raise_alarm("duress", _door_subject(door), event, _when(event), lock_=door)

    return handle


def _door_alarm(kind: str, raising: bool):
    def handle(event):
        door = _door(event)
        verb = domain.raise_alarm if raising else domain.clear_alarm
        verb(kind, _door_subject(door), event, _when(event), lock_=door)

    return handle


def _door_position(is_open: bool):
    def handle(event):
        door = _door(event)
        domain.move_forward(door, "door_open", _when(event), door_open=is_open)
        domain.record_activity(event, door, _when(event), action="door opened" if is_open else "door closed")

    return handle


def _controller_alarm(kind: str, raising: bool):
    def handle(event):
        panel, body = _panel(event), event.payload.get("body") or {}
        subject = f"pdk:controller:{panel.external_id}:{body.get('ioLinkId')}:{body.get('address') or ''}"
        verb = domain.raise_alarm if raising else domain.clear_alarm
        verb(kind, subject, event, _when(event), site_id=panel.site_id)

    return handle


def _panel_connection(online: bool):
    def handle(event):
        panel = _panel(event)
        domain.move_forward(panel, "online", _when(event), online=online)
        verb = domain.clear_alarm if online else domain.raise_alarm
        verb("panel_offline", f"pdk:panel:{panel.external_id}", event, _when(event), site_id=panel.site_id)

    return handle


def _reader_error(event):
    panel = _panel(event)
    body = event.payload.get("body") or {}
    where = f":{body['doorId']}" if "doorId" in body else ""
    domain.raise_alarm(
        "reader_error", f"pdk:reader:{panel.external_id}{where}", event, _when(event), site_id=panel.site_id
    )


# Topic -> handler(event). Topics in neither table end "unhandled", visible and replayable.
HANDLERS: dict[str, Any] = {
    **{
        f"door.request.{result}": _door_request(result)
        for result in ("allowed", "denied", "unknown", "found", "multiallowed", "duress")
    },
    "door.alarm.forced": _door_alarm("door_forced", raising=True),
    "door.alarm.forced.cleared": _door_alarm("door_forced", raising=False),
    "door.alarm.propped.on": _door_alarm("door_propped", raising=True),
    "door.alarm.propped.off": _door_alarm("door_propped", raising=False),
    "door.alarm.propped.alloff": _door_alarm("door_propped", raising=False),
    "door.input.dps.opened": _door_position(is_open=True),
    "door.input.dps.closed": _door_position(is_open=False),
    "endpoint.alarm.comloss.on": _controller_alarm("controller_comm_loss", raising=True),
    "endpoint.alarm.comloss.off": _controller_alarm("controller_comm_loss", raising=False),
    "endpoint.input.pi.off": _controller_alarm("input_power_lost", raising=True),
    "endpoint.input.pi.on": _controller_alarm("input_power_lost", raising=False),
    "endpoint.input.pb.disconnected": _controller_alarm("battery_disconnected", raising=True),
    "endpoint.input.pb.connected": _controller_alarm("battery_disconnected", raising=False),
    "endpoint.input.lp.on": _controller_alarm("low_power_mode", raising=True),
    "endpoint.input.lp.off": _controller_alarm("low_power_mode", raising=False),
    "endpoint.input.po.present": _controller_alarm("overcurrent", raising=True),
    "endpoint.input.po.absent": _controller_alarm("overcurrent", raising=False),
    "panel.connected": _panel_connection(online=True),
    "panel.disconnected": _panel_connection(online=False),
    "error.card.parse": _reader_error,
    "error.packetized.protocol": _reader_error,
}
# Topic -> why the portal deliberately does nothing with it. (The remaining PDK topics are
# still to be mapped: they end "unhandled" until then.)
IGNORED: dict[str, str] = {}

"""Seam smart locks: Svix / Standard Webhooks signatures, event identity, handlers."""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from events.sources.base import (
    AuthenticationFailed,
    IdentifiedEvent,
    Inbound,
    bounded_key,
    first_time,
    require_string,
    time_from_iso,
    utf8_text,
)
from portal import domain
from portal.models import Placement

if TYPE_CHECKING:
    from events.models import Endpoint

NAME = "seam"
LABEL = "Seam"
SECRET_PREFIX = "whsec_"


_SIGNATURE = re.compile(r"^v1,[A-Za-z0-9+/]+={0,2}$")


def _well_formed(signature: str) -> bool:
    if not _SIGNATURE.match(signature):
        return False
    try:
        base64.b64decode(signature[3:], validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _signature_headers(inbound: Inbound) -> dict[str, str]:
    """Svix sends svix-*; Standard Webhooks senders send webhook-*. The library reads the latter.

    Of the space-separated signatures only well-formed v1 ones are passed on: the library gives
    up on the first entry it can't parse, and one odd entry must not hide a valid one.
    """
    headers = {}
    for part in ("id", "timestamp", "signature"):
        value = inbound.headers.get(f"svix-{part}") or inbound.headers.get(f"webhook-{part}")
        if value:
            headers[f"webhook-{part}"] = value
    if "webhook-signature" in headers:
        signatures = [s for s in headers["webhook-signature"].split() if _well_formed(s)]
        if signatures:
            headers["webhook-signature"] = " ".join(signatures)
        else:
            del headers["webhook-signature"]
    return headers


def authenticate(inbound: Inbound, endpoint: Endpoint) -> None:
    if not endpoint.secret:
        raise AuthenticationFailed("the endpoint has no verification configured")
    headers = _signature_headers(inbound)
    if "webhook-signature" not in headers:
        raise AuthenticationFailed("no v1 signature in a svix-signature (or webhook-signature) header")
    utf8_text(inbound.body)  # the signed content is text; a body that isn't UTF-8 can't be Seam's
    try:
        Webhook(endpoint.secret).verify(inbound.body, headers, json_parse=False)
    except WebhookVerificationError as exc:
        raise AuthenticationFailed(f"signature rejected: {exc}") from None
    except (ValueError, TypeError, IndexError):
        # The library raises plain ValueError for a signature it can't decode.
        raise AuthenticationFailed("malformed signature headers") from None


def identify(inbound: Inbound) -> IdentifiedEvent:
    payload = inbound.payload
    event_id = require_string(payload, "event_id")
    event_type = require_string(payload, "event_type")
    message_id = inbound.headers.get("svix-id") or inbound.headers.get("webhook-id") or ""
    return IdentifiedEvent(
        event_type=event_type,
        dedup_key=bounded_key(event_id),
        occurred_at=first_time(time_from_iso(payload.get("occurred_at")), time_from_iso(payload.get("created_at"))),
        payload=payload,
        message_id=message_id[:255],
    )


def validate(event_type: str, payload: dict[str, Any]) -> str | None:
    """The vendor publishes no schema to hold its events to: nothing to check before handling."""
    return None


def endpoint_problems(endpoint: Endpoint) -> dict[str, str]:
    problems = {}
    if not endpoint.secret:
        problems["secret"] = "A Seam endpoint needs the webhook's whsec_… secret."
    elif not endpoint.secret.startswith(SECRET_PREFIX):
        problems["secret"] = "A Seam webhook secret starts with whsec_."
    else:
        encoded = endpoint.secret[len(SECRET_PREFIX) :]
        try:
            if not base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True):
                problems["secret"] = "The whsec_ secret is empty."
        except (binascii.Error, ValueError):
            problems["secret"] = "The part after whsec_ is not base64."
    for name in ("basic_username", "basic_password", "token_header", "partner_id"):
        if getattr(endpoint, name):
            problems[name] = "Seam endpoints only use the whsec_ secret."
    if endpoint.unauthenticated:
        problems["unauthenticated"] = "Seam signs every delivery: configure its whsec_ secret instead."
    return problems


def describe_verification(endpoint: Endpoint) -> str:
    if not endpoint.secret:
        return "not configured: rejects everything"
    return "Svix / Standard Webhooks signature (HMAC-SHA256), ±5 minutes"


def secret_headers(endpoint: Endpoint) -> set[str]:
    """Headers beyond Authorization and Cookie that carry a credential: none."""
    return set()


def sign(endpoint: Endpoint, body: bytes) -> dict[str, str]:
    """The headers Seam (Svix) would send with this body."""
    message_id = f"msg_{uuid.uuid4().hex}"
    now = datetime.now(tz=UTC)
    signature = Webhook(endpoint.secret).sign(message_id, now, body.decode("utf-8"))
    return {"svix-id": message_id, "svix-timestamp": str(int(now.timestamp())), "svix-signature": signature}


# --- handlers: Seam event types -> domain verbs -------------------------------------------------


def _when(event):
    return event.occurred_at or event.received_at


def _account(event):
    """The connected account a device belongs to (its workspace when the event names none)."""
    payload = event.payload
    if isinstance(payload.get("connected_account_id"), str):
        return domain.placement(Placement.Kind.SEAM_ACCOUNT, payload["connected_account_id"])
    return domain.placement(Placement.Kind.SEAM_WORKSPACE, str(payload.get("workspace_id") or "unknown"))


def _device(event):
    return domain.lock(NAME, str(event.payload["device_id"]), place=_account(event))


def _subject(device) -> str:
    return f"seam:device:{device.external_id}"


def _lock_action(locked: bool):
    def handle(event):
        device, payload = _device(event), event.payload
        domain.move_forward(device, "locked", _when(event), locked=locked)
        domain.record_activity(
            event,
            device,
            _when(event),
            action="lock" if locked else "unlock",
            result="locked" if locked else "unlocked",
            method=str(payload.get("method") or ""),
            actor=f"access code {payload['access_code_id']}" if payload.get("access_code_id") else "",
        )

    return handle


def _access_denied(event):
    device = _device(event)
    code = event.payload.get("access_code_id")
    domain.record_activity(
        event, device, _when(event), action="request", result="denied", actor=f"access code {code}" if code else ""
    )
    domain.raise_alarm("access_denied", _subject(device), event, _when(event), lock_=device)


def _connection(online: bool):
    def handle(event):
        device = _device(event)
        domain.move_forward(device, "online", _when(event), online=online)
        verb = domain.clear_alarm if online else domain.raise_alarm
        verb("device_offline", _subject(device), event, _when(event), lock_=device)

    return handle


def _battery(event):
    device, payload = _device(event), event.payload
    level, status = payload.get("battery_level"), payload.get("battery_status") or ""
    if event.event_type == "device.low_battery":
        status = status or "low"
    if isinstance(level, bool) or not isinstance(level, (int, float)):
        level = device.battery_level
    domain.move_forward(device, "battery", _when(event), battery_level=level, battery_status=status[:16])
    if status in ("low", "critical"):
        severity = "major" if status == "critical" else ""
        domain.raise_alarm("low_battery", _subject(device), event, _when(event), lock_=device, severity=severity)
    elif status in ("good", "full"):
        domain.clear_alarm("low_battery", _subject(device), event, _when(event), lock_=device)


def _tampered(event):
    device = _device(event)
    domain.raise_alarm("tampered", _subject(device), event, _when(event), lock_=device)


HANDLERS: dict[str, Any] = {
    "lock.locked": _lock_action(locked=True),
    "lock.unlocked": _lock_action(locked=False),
    "lock.access_denied": _access_denied,
    "device.connected": _connection(online=True),
    "device.disconnected": _connection(online=False),
    "device.low_battery": _battery,
    "device.battery_status_changed": _battery,
    "device.tampered": _tampered,
}
# Event type -> why the portal deliberately does nothing with it. (The remaining Seam types are
# still to be mapped: they end "unhandled" until then.)
IGNORED: dict[str, str] = {}

"""SmartphoneKey (SPK) EventBridge deliveries: static-token auth, partner check, event identity."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from events.sources.base import (
    AuthenticationFailed,
    IdentifiedEvent,
    Inbound,
    InvalidPayload,
    bounded_key,
    canonical_sha256,
    first_time,
    optional_id,
    parse_json_value,
    replace_unstorable,
    require_string,
    secrets_match,
    time_from_iso,
)
from portal import domain
from portal.models import AccessGrant, Placement

if TYPE_CHECKING:
    from events.models import Endpoint

NAME = "spk"
LABEL = "SmartphoneKey"


# detail-types whose detail fields arrive as JSON text and are stored parsed.
STRINGIFIED_FIELDS = {
    "Shadow Update": ("reportedState", "desiredState", "deltaState", "metadata"),
}
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def authenticate(inbound: Inbound, endpoint: Endpoint) -> None:
    if not endpoint.unauthenticated:
        if not endpoint.secret:
            raise AuthenticationFailed("the endpoint has no verification configured")
        if endpoint.token_header:
            received = inbound.headers.get(endpoint.token_header)
            if not received:
                raise AuthenticationFailed(f"missing {endpoint.token_header} header")
        else:
            scheme, _, received = inbound.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not received:
                raise AuthenticationFailed("missing Authorization: Bearer token")
        if not secrets_match(received.strip(), endpoint.secret):
            raise AuthenticationFailed("the token does not match")
    if endpoint.partner_id:
        detail = inbound.payload.get("detail")
        partner = detail.get("partnerId") if isinstance(detail, dict) else None
        if not isinstance(partner, str) or not secrets_match(partner, endpoint.partner_id):
            raise AuthenticationFailed("detail.partnerId is not this endpoint's partner")


def identify(inbound: Inbound) -> IdentifiedEvent:
    payload = inbound.payload
    require_string(payload, "source")
    detail_type = require_string(payload, "detail-type")
    detail = payload.get("detail")
    if not isinstance(detail, dict):
        raise InvalidPayload("the body lacks 'detail' (an object)")
    flags: list[str] = []
    stringified = STRINGIFIED_FIELDS.get(detail_type, ())
    if stringified:
        detail = dict(detail)
        for name in stringified:
            if isinstance(detail.get(name), str):
                detail[name], problem = _parse_inner_json(detail[name])
                if problem:
                    flags.append(f"detail.{name} is not valid JSON ({problem}); kept as text")
        payload = {**payload, "detail": detail}
    data = detail.get("data") if isinstance(detail.get("data"), dict) else {}
    envelope_id = optional_id(payload.get("id"))
    return IdentifiedEvent(
        event_type=detail_type,
        # The EventBridge envelope id; the documented Shadow Update sample has none.
        dedup_key=bounded_key(envelope_id) if envelope_id else canonical_sha256(payload),
        occurred_at=first_time(time_from_iso(data.get("timestamp")), time_from_iso(payload.get("time"))),
        payload=payload,
        flags=flags,
    )


# SPK's JSON Schemas for detail.data, copied from its docs (vendor-docs/smartphonekey).
SCHEMA_FILE = Path(__file__).parent / "catalogs" / "spk-event-schemas.json"


@functools.cache
def _validators() -> dict[str, Draft202012Validator]:
    schemas = json.loads(SCHEMA_FILE.read_text())["events"]
    return {name: Draft202012Validator(schema) for name, schema in schemas.items()}


def validate(event_type: str, payload: dict[str, Any]) -> str | None:
    """What is wrong with an event's detail.data against SPK's schema, or None.

    Two documented habits the schemas don't allow are accepted: data repeats its type in a
    "type" field (every catalog sample does), and optional fields may be null (the catalog
    marks them "string|null").
    """
    validator = _validators().get(event_type)
    detail = payload.get("detail")
    if validator is None or not isinstance(detail, dict):
        return None
    data = detail.get("data")
    if not isinstance(data, dict):
        return "detail.data is missing or not an object"
    required = set(validator.schema.get("required", ()))
    data = {
        key: value
        for key, value in data.items()
        if not (key == "type" and value == event_type) and not (value is None and key not in required)
    }
    error = best_match(validator.iter_errors(data))
    if error is None:
        return None
    where = "detail.data" + "".join(f"[{part!r}]" for part in error.absolute_path)
    return f"{where}: {error.message}"[:1000]


def _parse_inner_json(text: str) -> tuple[Any, str]:
    """Inner JSON is held to the same rules as a body; what fails is kept as (storable) text."""
    try:
        return parse_json_value(text), ""
    except ValueError as exc:
        return replace_unstorable(text), str(exc)[:120]


def endpoint_problems(endpoint: Endpoint) -> dict[str, str]:
    problems = {}
    if endpoint.unauthenticated and endpoint.secret:
        problems["unauthenticated"] = "Choose either a token or no authentication, not both."
    elif not endpoint.unauthenticated and not endpoint.secret:
        problems["secret"] = (
            "An SPK endpoint needs its static token, or 'unauthenticated' ticked explicitly "
            "(SPK's 'none' authentication)."
        )
    if endpoint.token_header:
        if not _HEADER_NAME.match(endpoint.token_header):
            problems["token_header"] = "Not a valid HTTP header name."
        elif endpoint.token_header.lower() == "authorization":
            problems["token_header"] = "Leave blank for Authorization: Bearer."
        elif not endpoint.secret:
            problems["token_header"] = "A token header needs a token (the secret)."
    for name in ("basic_username", "basic_password"):
        if getattr(endpoint, name):
            problems[name] = "Only ProdataKey endpoints use Basic credentials."
    return problems


def describe_verification(endpoint: Endpoint) -> str:
    if endpoint.unauthenticated:
        method = "UNAUTHENTICATED (SPK 'none')"
    elif not endpoint.secret:
        method = "not configured: rejects everything"
    elif endpoint.token_header:
        method = f"static token in {endpoint.token_header} (apiKeyHeader)"
    else:
        method = "Authorization: Bearer token (bearerToken)"
    if endpoint.partner_id:
        method += f"; detail.partnerId must be {endpoint.partner_id!r}"
    return method


def secret_headers(endpoint: Endpoint) -> set[str]:
    """The apiKeyHeader carries the token (Authorization is always redacted by the store)."""
    return {endpoint.token_header.lower()} - {""}


def sign(endpoint: Endpoint, body: bytes) -> dict[str, str]:
    """The headers SPK's EventBridge API destination would send."""
    if endpoint.unauthenticated or not endpoint.secret:
        return {}
    if endpoint.token_header:
        return {endpoint.token_header: endpoint.secret}
    return {"Authorization": f"Bearer {endpoint.secret}"}


# --- handlers: SPK detail-types -> domain verbs -------------------------------------------------
# SPK severities -> ours; the event's own severity wins over the kind's default.
ALARM_SEVERITY = {"warning": "major", "critical": "critical"}


def _when(event):
    return event.occurred_at or event.received_at


def _partner(event):
    partner = event.payload["detail"].get("partnerId")
    return domain.placement(Placement.Kind.SPK_PARTNER, str(partner or "unknown"))


def _sensor_alarm(raising: bool):
    def handle(event):
        data = event.payload["detail"]["data"]
        partner = _partner(event)
        subject = f"spk:device:{data['deviceId']}:{data['alarmType']}"
        if raising:
            severity = ALARM_SEVERITY.get(data.get("severity"), "")
            domain.raise_alarm(
                data["alarmType"], subject, event, _when(event), site_id=partner.site_id, severity=severity
            )
        else:
            domain.clear_alarm(data["alarmType"], subject, event, _when(event), site_id=partner.site_id)

    return handle


def _shadow_update(event):
    """A device that hasn't applied its desired configuration has a non-empty delta."""
    detail = event.payload["detail"]
    partner = _partner(event)
    subject = f"spk:thing:{detail.get('thingName')}"
    delta = detail.get("deltaState")
    if delta:  # a non-empty object, or text that wasn't JSON: either way not in sync
        domain.raise_alarm("configuration_drift", subject, event, _when(event), site_id=partner.site_id)
    else:
        domain.clear_alarm("configuration_drift", subject, event, _when(event), site_id=partner.site_id)


def _lock(event, uuid_field: str, name_field: str = ""):
    data = event.payload["detail"]["data"]
    name = data.get(name_field) if name_field and isinstance(data.get(name_field), str) else ""
    return domain.lock(NAME, str(data[uuid_field]), name=name, place=_partner(event))


def _lock_created(event):
    data = event.payload["detail"]["data"]
    lock = _lock(event, "uuid")
    known = {k: data[k] for k in ("lockId", "serialNumber", "thingName", "ownerId") if data.get(k) is not None}
    if known.items() - lock.details.items():
        lock.details = {**lock.details, **known}
        lock.save(update_fields=["details"])


def _person(event, **fields):
    data = event.payload["detail"]["data"]
    return domain.resident(NAME, str(data["userId"]), **{k: v for k, v in fields.items() if isinstance(v, str)})


def _grant(uuid_field: str, *, level: str = "", name_field: str = ""):
    def handle(event):
        data = event.payload["detail"]["data"]
        person = _person(event, name=data.get("name"), email=data.get("email"))
        lock = _lock(event, uuid_field, name_field)
        level_ = data.get("accessLevel") if data.get("accessLevel") in AccessGrant.Level.values else level
        domain.grant_access(person, lock, _when(event), level=level_, granted_by=str(data.get("grantedBy") or ""))

    return handle


def _revoke(uuid_field: str):
    def handle(event):
        domain.revoke_access(_person(event), _lock(event, uuid_field), _when(event))

    return handle


HANDLERS: dict[str, Any] = {
    "LockCreated": _lock_created,
    "OwnerSet": _grant("uuid", level="OWNER"),
    "ResidentAdded": _grant("uuid", level="USER"),
    "ResidentRemoved": _revoke("uuid"),
    # Here lockId is the lock's UUID (in lock events it is SPK's number).
    "AccessibleLockAdded": _grant("lockId", name_field="lockName"),
    "AccessibleLockRemoved": _revoke("lockId"),
    "AlarmTriggered": _sensor_alarm(raising=True),
    "AlarmCleared": _sensor_alarm(raising=False),
    "Shadow Update": _shadow_update,
}
# detail-type -> why the portal deliberately does nothing with it. (The remaining SPK types are
# still to be mapped: they end "unhandled" until then.)
IGNORED: dict[str, str] = {}

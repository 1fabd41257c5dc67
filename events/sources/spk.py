"""SmartphoneKey (SPK) EventBridge deliveries: static-token auth, partner check, event identity."""

from __future__ import annotations

import functools
import json
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from django.db.models import Q
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
    redact,
    replace_unstorable,
    require_string,
    secrets_match,
    time_from_epoch_ms,
    time_from_iso,
)
from portal import domain
from portal.models import AccessGrant, Camera, Credential, Lock, Placement

if TYPE_CHECKING:
    from events.models import Endpoint

NAME = "spk"
LABEL = "SmartphoneKey"


# Fields that carry a secret: RTSP camera credentials, 3deye registration codes, wallet pass URLs
# (whoever has one can fetch the pass). Stored events and the admin show "[redacted]".
SECRET_FIELDS = frozenset({"password", "registrationCode", "rtspHash", "passUrl"})

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
        payload=redact(payload, SECRET_FIELDS),
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
# Time: each handler uses the domain time in detail.data (its one `timestamp` or `…At` field, ISO
# text or epoch ms), else the envelope's. detail.version counts per SPK aggregate, but one portal
# row is fed by several aggregates (a resident by user and lock events), so vendor time is the clock.

# SPK severities -> ours; the event's own severity wins over the kind's default.
ALARM_SEVERITY = {"warning": "major", "critical": "critical"}
Kind = Credential.Kind


def _when(event):
    return event.occurred_at or event.received_at


def _data(event) -> dict:
    return event.payload["detail"]["data"]


def _at(event):
    for key, value in _data(event).items():
        if key == "timestamp" or key.endswith("At"):
            found = time_from_iso(value) or time_from_epoch_ms(value)
            if found:
                return found
    return _when(event)


def _number(value):
    """SPK numbers are JSON numbers: 1042 and 1042.0 are the same key."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


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


# --- locks: external_id is the lock's uuid; SPK's numeric lockId is kept in details


def _lock(event, uuid_field: str = "uuid", name_field: str = ""):
    data = _data(event)
    name = data.get(name_field) if name_field and isinstance(data.get(name_field), str) else ""
    found = domain.lock(NAME, str(data[uuid_field]), name=name, place=_partner(event))
    number = data.get("lockId")
    if isinstance(number, (int, float)) and not isinstance(number, bool):
        domain.keep_details(found, lockId=_number(number))
    return found


def _lock_created(event):
    """A new lock, with its initial key slots ({uuid, indexNumber?, userId?})."""
    data, at = _data(event), _at(event)
    lock = _lock(event, "uuid")
    domain.keep_details(lock, **{k: data.get(k) for k in ("serialNumber", "thingName", "ownerId")})
    for key in data.get("keys") or ():
        index, user_id = key.get("indexNumber"), key.get("userId")
        person = domain.resident(NAME, str(user_id)) if user_id else None
        label = f"slot {_number(index)}" if index is not None else None
        _issue(Kind.KEY_SLOT, str(key["uuid"]), at, person=person, lock=lock, label=label, keyIndexNumber=index)


def _organization_set(event):
    domain.keep_reading(_lock(event), _at(event), "organization", orgId=str(_data(event)["orgId"]))


def _lock_uuid_changed(event):
    """The old uuid stays an alias, so events still naming it (late or replayed) find the lock."""
    data = _data(event)
    domain.rename_lock(NAME, str(data["previousUuid"]), str(data["newUuid"]), _at(event))
    _lock(event, "newUuid")


def _lock_open_requested(event):
    data = _data(event)
    reason = data.get("reason") if isinstance(data.get("reason"), str) else ""
    noted = {k: data[k] for k in ("requestId", "reason") if data.get(k) is not None}
    domain.record_activity(event, _lock(event), _at(event), action="open requested", result=reason[:40], details=noted)


def _lock_by_reference(event, reference):
    """CameraLinkedToLock's lockId is text: a uuid as in AccessibleLockAdded, or SPK's number."""
    text = str(reference).strip()
    if text.isdigit():
        return Lock.objects.filter(vendor=NAME, details__lockId=int(text)).first()
    return domain.lock(NAME, text, place=_partner(event))


# --- people: Resident(vendor "spk", external_id userId)


def _person(event):
    return domain.resident(NAME, str(_data(event)["userId"]))


def _person_if_named(event):
    return _person(event) if _data(event).get("userId") else None


def _grant(uuid_field: str, *, level: str = "", name_field: str = ""):
    def handle(event):
        data = event.payload["detail"]["data"]
        person = _person(event)
        if isinstance(data.get("name"), str) and data["name"]:
            domain.keep_reading(person, _at(event), "name_reported", name=data["name"])
            _settle_name(person)
        if isinstance(data.get("email"), str) and data["email"]:
            _contact(person, "email", data["email"], _at(event))
        lock = _lock(event, uuid_field, name_field)
        level_ = data.get("accessLevel") if data.get("accessLevel") in AccessGrant.Level.values else level
        domain.grant_access(person, lock, _at(event), level=level_, granted_by=str(data.get("grantedBy") or ""))

    return handle


def _revoke(uuid_field: str):
    def handle(event):
        domain.revoke_access(_person(event), _lock(event, uuid_field), _at(event))

    return handle


USER_STATUS = {"ACTIVE": "active", "INACTIVE": "inactive", "SUSPENDED": "suspended"}


def _resident(event):
    return domain.resident_for_update(NAME, str(_data(event)["userId"]))


def _user_created(event):
    status = str(_data(event)["status"])
    domain.set_status(_resident(event), _at(event), USER_STATUS.get(status, status.lower()))


def _user_status(status: str, by_field: str):
    """Suspensions and reactivations move forward in vendor time: an older one arriving late loses."""

    def handle(event):
        data, person, at = _data(event), _resident(event), _at(event)
        domain.set_status(person, at, status)
        domain.keep_reading(
            person, at, "status_change", status=status, by=data.get(by_field), reason=data.get("reason")
        )

    return handle


def _settle_name(person) -> None:
    """SPK reports a full name (ResidentAdded) and, apart, first and last names (ProfileUpdated);
    the portal keeps one name: each part is the newer of its own report and the full name's."""
    full = person.details.get("name_reported") or {}
    spoken = str(full.get("name") or person.name).split(maxsplit=1)
    parts = []
    for index, part in enumerate(("firstName", "lastName")):
        reading = person.details.get(part) or {}
        newer = reading and (not full or _newer({"at": reading["as_of"]}, {"at": full["as_of"]}))
        parts.append(reading["value"] if newer else spoken[index] if len(spoken) > index else "")
    name = " ".join(part for part in parts if part)
    if name:
        domain.keep_fields(person, name=name[:200])


def _profile_updated(event):
    changes, person, at = _data(event).get("changes") or {}, _resident(event), _at(event)
    for part in ("firstName", "lastName"):
        if isinstance((changes.get(part) or {}).get("new"), str):
            domain.keep_reading(person, at, part, value=changes[part]["new"])
    _settle_name(person)
    phone = changes.get("phoneNumber")
    if isinstance(phone, dict) and phone:  # "new" missing: the number was removed
        _contact(person, "phone", str(phone.get("new") or "")[:40], at)


def _fits_mask(current: str, masked: str) -> bool:
    """ "***4567" or "a***@example.com": does the value we know end and start the same way?"""
    head, _, tail = masked.partition("*")
    tail = tail.lstrip("*")
    current, head, tail = current.lower(), head.lower(), tail.lower()
    return bool(current) and len(current) >= len(head + tail) and current.startswith(head) and current.endswith(tail)


def _contact(person, field: str, value: str, at) -> None:
    """A full phone number or email address, moved forward in vendor time; one older than the
    newest masked report still replaces the mask when it fits it (we then know the whole value)."""
    if not domain.move_fields_forward(person, f"{field}_reported", at, **{field: value}):
        current = getattr(person, field)
        if value and "*" in current and _fits_mask(value, current):
            domain.keep_fields(person, **{field: value})


def _masked_update(field: str, masked_field: str):
    """SPK only says a masked value. Keep the full value we know if it fits the mask; otherwise the
    masked one, so nobody reads a stale number or address as current."""

    def handle(event):
        data, person = _data(event), _resident(event)
        masked = data.get(masked_field) if isinstance(data.get(masked_field), str) else ""
        if data["action"] == "set" and not masked:
            return  # set to something SPK didn't show: nothing to keep
        current = getattr(person, field)
        value = current if masked and _fits_mask(current, masked) else masked
        domain.move_fields_forward(person, f"{field}_reported", _at(event), **{field: value})

    return handle


def _user_device(linked: bool):
    """A Matter device or camera linked to a user's account (deviceType matter|camera|rtsp-camera).
    It opens no door, so it is not a Credential: it is listed on the resident, newest report wins."""

    def handle(event):
        data, person = _data(event), _resident(event)
        reported = {"type": data.get("deviceType"), "linked": linked, "reason": data.get("reason")}
        if linked:
            reported |= {k: data[k] for k in ("name", "orgId") if data.get(k) is not None}
        domain.keep_reading(person, _at(event), "devices", str(data["deviceId"]), merge=True, **reported)

    return handle


# --- credentials


def _issue(kind, external_id, at, *, person=None, lock=None, label=None, **noted):
    found = domain.issue_credential(NAME, kind, external_id, at, resident_=person, lock_=lock, label=label)
    domain.set_status(found, at, "issued")
    domain.keep_details(found, **noted)
    return found


def _remove(kind, external_id, at, *, person=None, lock=None, status="removed", **noted):
    found = domain.remove_credential(NAME, kind, external_id, at, resident_=person, lock_=lock)
    domain.set_status(found, at, status)
    domain.keep_details(found, **noted)
    return found


def _pending(kind, external_id, at, status, *, person=None, lock=None, **noted):
    """A step before issuing (a wallet key prepared, a key write requested)."""
    found = domain.credential(NAME, kind, external_id, lock_=lock)
    if person is not None and found.resident_id is None:
        domain.keep_fields(found, resident=person)
    domain.set_status(found, at, status)
    domain.keep_details(found, **noted)
    return found


def _key_slot(event, action):
    """A lock's key slot (keyUuid); KeyAdded names its user when there is one."""
    data = _data(event)
    index = data.get("keyIndexNumber")
    label = f"slot {_number(index)}" if index is not None else None
    where = {"person": _person_if_named(event), "lock": _lock(event)}
    if action == "add":
        _issue(Kind.KEY_SLOT, str(data["keyUuid"]), _at(event), label=label, **where, keyIndexNumber=index)
    elif action == "remove":
        _remove(Kind.KEY_SLOT, str(data["keyUuid"]), _at(event), **where)
    else:
        _pending(Kind.KEY_SLOT, str(data["keyUuid"]), _at(event), "write requested", **where)


def _physical_key(event, action):
    data = _data(event)
    number = _number(data["number"])
    if action == "add":
        noted = {k: data.get(k) for k in ("orgId", "orgName", "note")}
        _issue(Kind.PHYSICAL_KEY, str(number), _at(event), person=_person(event), label=f"key {number}", **noted)
    else:
        _remove(Kind.PHYSICAL_KEY, str(number), _at(event), person=_person(event))


WALLETS = {"APPLE": "Apple Wallet", "GOOGLE": "Google Wallet"}
# passUrl is not kept: whoever has it can fetch the pass, i.e. the key.
WALLET_NOTED = ("walletType", "keyIndex", "deviceId", "passId", "serialNumber")


def _wallet_key(event, action):
    """Prepared -> status prepared; committed or added -> issued; rolled back or removed -> removed."""
    data = _data(event)
    if action == "add":  # the legacy one-step path nests the key
        data = data["walletKey"]
    noted = {k: data.get(k) for k in WALLET_NOTED}
    at, person = time_from_iso(data.get("addedAt")) or _at(event), _person(event)
    if action == "prepare":
        _pending(Kind.WALLET_KEY, str(data["keyId"]), at, "prepared", person=person, **noted)
    elif action in ("commit", "add"):
        label = WALLETS.get(data.get("walletType"))
        _issue(Kind.WALLET_KEY, str(data["keyId"]), at, person=person, label=label, **noted)
    else:
        key = data["preparedKeyId"] if action == "roll back" else data["keyId"]
        _remove(Kind.WALLET_KEY, str(key), at, person=person, removalReason=data.get("reason"))


def _license_plate(event, action):
    data = _data(event)
    key, person = f"{data['userId']}:{data['plate']}", _person(event)
    if action == "add":
        label = data.get("label") or data["plate"]
        _issue(Kind.LICENSE_PLATE, key, _at(event), person=person, label=label, plate=data["plate"])
    else:
        _remove(Kind.LICENSE_PLATE, key, _at(event), person=person)


TEMP_KEY_TERMS = ("validFrom", "validUntil", "maxUses", "accessMode", "allowedUserIds")


def _temp_key_terms(found, at, terms: dict) -> None:
    """Created reports all terms, Updated only the changed ones: merged so the newest report of each
    wins in any order; no maxUses means unlimited."""
    domain.keep_reading(found, at, "terms", merge=True, **{k: terms[k] for k in TEMP_KEY_TERMS if k in terms})
    kept = found.details.get("terms") or {}
    domain.keep_fields(
        found, valid_from=time_from_iso(kept.get("validFrom")), valid_until=time_from_iso(kept.get("validUntil"))
    )


def _temp_key(event, action):
    data, at = _data(event), _at(event)
    key, lock = str(data["tempKeyUuid"]), _lock(event, "lockUuid")
    if action == "create":
        found = _issue(Kind.TEMP_KEY, key, at, lock=lock, label="temporary key", createdBy=data.get("createdBy"))
        _temp_key_terms(found, at, {"maxUses": None, **data})
    elif action == "update":
        found = domain.credential(NAME, Kind.TEMP_KEY, key, lock_=lock)
        _temp_key_terms(found, at, data.get("changes") or {})
    elif action == "delete":
        _remove(Kind.TEMP_KEY, key, at, lock=lock, status="deleted", deletedBy=data.get("deletedBy"))
    else:
        person = _person_if_named(event)
        noted = {"tempKeyUuid": key, "usedCount": data.get("usedCount")}
        domain.record_activity(
            event, lock, at, action="temp key used", result="allowed", method="temp key", resident=person, details=noted
        )
        domain.keep_reading(domain.credential(NAME, Kind.TEMP_KEY, key, lock_=lock), at, "usage", **noted)


def _matter_pin(event, action):
    """Matter numbers a lock's PINs by credentialIndex across its users (and MatterPinCleared may omit
    userIndex), so a PIN is thingName:credentialIndex; userIndex is noted."""
    data = _data(event)
    key = f"{data['thingName']}:{data['credentialIndex']}"
    lock = (
        Lock.objects.filter(vendor=NAME)
        .filter(Q(external_id=str(data["deviceId"])) | Q(details__thingName=data["thingName"]))
        .first()
    )
    noted = {"deviceId": data["deviceId"], "userIndex": data.get("userIndex")}
    if action == "set":
        label = f"PIN {data['credentialIndex']}" + (f" (user {data['userIndex']})" if data.get("userIndex") else "")
        _issue(Kind.PIN, key, _at(event), lock=lock, label=label, **noted)
    else:
        _remove(Kind.PIN, key, _at(event), lock=lock, **noted)


# --- hubs: Placement SPK_HUB by hubId. SPK's siteId doesn't map to a portal Site: a superuser places hubs.


def _hub(hub_id) -> Placement:
    return domain.placement(Placement.Kind.SPK_HUB, str(hub_id))


def _hub_provisioned(event):
    data = _data(event)
    hub = _hub(data["hubId"])
    if not hub.name:
        hub = domain.placement(Placement.Kind.SPK_HUB, hub.external_id, name=f"{data['model']} {data['serial']}")
    domain.keep_details(hub, **{k: data.get(k) for k in ("model", "serial", "thingName", "vendorName")})
    domain.set_status(hub, _at(event), "provisioned")


def _hub_claimed(event):
    data, at = _data(event), _at(event)
    hub = _hub(data["hubId"])
    domain.set_status(hub, at, "claimed")
    domain.keep_reading(hub, at, "claim", orgId=data["orgId"], siteId=data["siteId"], by=data.get("claimedBy"))


def _hub_reclaimed(event):
    """Moved to another SPK site: the portal's placement of it is no longer known to be right."""
    data, at = _data(event), _at(event)
    hub = _hub(data["hubId"])
    domain.set_status(hub, at, "claimed")
    newest = domain.keep_reading(
        hub,
        at,
        "claim",
        orgId=data["newOrgId"],
        siteId=data["newSiteId"],
        by=data.get("reclaimedBy"),
        previousOrgId=data.get("previousOrgId"),
        previousSiteId=data.get("previousSiteId"),
        reason=data.get("reason"),
    )
    if newest and data["newSiteId"] != data.get("previousSiteId") and hub.site_id is not None:
        domain.place(hub, None)


def _hub_role_set(event):
    data = _data(event)
    domain.keep_reading(_hub(data["hubId"]), _at(event), "role", isPrimary=data["isPrimary"], by=data.get("setBy"))


def _hub_status(status: str, by_field: str):
    def handle(event):
        data, at = _data(event), _at(event)
        hub = _hub(data["hubId"])
        domain.set_status(hub, at, status)
        domain.keep_reading(hub, at, "status_change", status=status, by=data.get(by_field), reason=data.get("reason"))

    return handle


def _newer(update: dict, kept: dict | None) -> bool:
    return not kept or datetime.fromisoformat(update["at"]) >= datetime.fromisoformat(kept["at"])


def _fold_migration(kept: dict, update: dict) -> dict:
    """The migration's status and each device's, newest report winning in any order."""
    folded = {**kept, **{k: v for k, v in update.items() if k not in ("status", "devices")}}
    if "status" in update and _newer(update["status"], kept.get("status")):
        folded["status"] = update["status"]
    devices = dict(kept.get("devices") or {})
    for device, state in (update.get("devices") or {}).items():
        if _newer(state, devices.get(device)):
            devices[device] = state
    folded["devices"] = devices
    return folded


def _migration(event):
    """Kept on the source and target hubs (the latest migration each). Reports about a migration
    whose start hasn't arrived wait on the partner placement and are folded in when it does."""
    data, at = _data(event), _at(event).isoformat()
    migration_id = str(data["migrationId"])
    update: dict[str, Any] = {"id": migration_id}
    if event.event_type == "MigrationStarted":
        queued = {"status": "Queued", "at": at}
        update |= {"source": data["sourceHubId"], "target": data["targetHubId"], "started": at}
        update |= {"status": {"status": "started", "at": at}, "devices": dict.fromkeys(data["deviceIds"], queued)}
        hubs = [_hub(data["sourceHubId"]), _hub(data["targetHubId"])]
    else:
        if event.event_type == "MigrationCompleted":
            update["status"] = {"status": data["status"], "at": at}
        else:
            state = {"status": data["status"], "at": at, "error": data.get("error")}
            update["devices"] = {str(data["deviceId"]): {k: v for k, v in state.items() if v is not None}}
        hubs = list(Placement.objects.filter(kind=Placement.Kind.SPK_HUB, details__migration__id=migration_id))
    partner = Placement.objects.select_for_update().get(pk=_partner(event).pk)
    waiting = dict(partner.details.get("pending_migrations") or {})
    if not hubs:
        waiting[migration_id] = _fold_migration(waiting.get(migration_id, {}), update)
        domain.keep_details(partner, pending_migrations=waiting)
        return
    if migration_id in waiting:
        update = _fold_migration(waiting.pop(migration_id), update)
        domain.keep_details(partner, pending_migrations=waiting)
    for hub in hubs:
        hub = Placement.objects.select_for_update().get(pk=hub.pk)
        kept = hub.details.get("migration") or {}
        if kept.get("id", migration_id) != migration_id:
            if kept.get("started") and not _newer({"at": update["started"]}, {"at": kept["started"]}):
                continue  # this hub has started a later migration since
            kept = {}
        domain.keep_details(hub, migration=_fold_migration(kept, update))


LOCK_DEVICE_TYPES = {"lock", "doorlock", "smartlock"}


def _matter_device(event):
    """A Matter door lock on a hub is a door (a Lock placed on the hub, by deviceId); any other
    Matter device is listed on its hub."""
    data = _data(event)
    hub = _hub(data["hubId"])
    if re.sub(r"[^a-z]", "", str(data["deviceType"]).lower()) in LOCK_DEVICE_TYPES:
        lock = domain.lock(NAME, str(data["deviceId"]), place=hub)
        domain.keep_details(lock, thingName=data["thingName"], deviceType=data["deviceType"], hubId=data["hubId"])
    else:
        reported = {"type": data["deviceType"], "thingName": data["thingName"]}
        domain.keep_reading(hub, _at(event), "devices", str(data["deviceId"]), **reported)


# --- cameras (3dEye and RTSP): Camera by cameraId. Stream credentials are never kept.


def _safe_url(value) -> str | None:
    """A stream URL without user:password@ or a query (signed URLs carry tokens there)."""
    if not isinstance(value, str) or not value:
        return None
    parts = urlsplit(value)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


CAMERA_URLS = ("httpUrl", "rtspUrl", "httpSnapshotUrl")
# Not rtspHash: a hash of a URL that may hold a password can be guessed back.
CAMERA_NOTED = ("threeDeyeCameraId", "cameraType", "orgId", "ownerId", "streamId", "placementMode")


def _camera(event) -> Camera:
    return domain.equipment(Camera, NAME, str(_data(event)["cameraId"]), place=_partner(event))


def _camera_reported(event, status: str = ""):
    """Registered or updated: name and stream URLs move forward in vendor time. Only named fields
    are read, so a `password` (or `username`, `registrationCode`) in the payload is never kept."""
    data, at = _data(event), _at(event)
    camera = _camera(event)
    if status:
        domain.set_status(camera, at, status)
        kind = "rtsp" if event.event_type.startswith("Rtsp") else "3deye"
        domain.keep_details(camera, kind=kind, **{k: data.get(k) for k in CAMERA_NOTED})
    if isinstance(data.get("name"), str):
        domain.rename(camera, data["name"], at)
    urls = {k: _safe_url(data.get(k)) for k in CAMERA_URLS}
    urls = {k: v for k, v in urls.items() if v}
    if urls:
        domain.keep_reading(camera, at, "stream", merge=True, **urls)


CAMERA_BY = ("disabledBy", "deletedBy")


def _camera_status(status: str):
    def handle(event):
        data, at = _data(event), _at(event)
        camera = _camera(event)
        by = next((data[k] for k in CAMERA_BY if data.get(k)), None)
        domain.set_status(camera, at, status)
        domain.keep_reading(camera, at, "status_change", status=status, by=by, reason=data.get("reason"))

    return handle


def _camera_link(event, linked: bool):
    """Camera.lock, moved forward in vendor time; a lock number we don't know yet is only noted."""
    data, at = _data(event), _at(event)
    camera = _camera(event)
    lock = _lock_by_reference(event, data["lockId"]) if linked else None
    if domain.keep_reading(camera, at, "lock_link", lockId=data.get("lockId") if linked else None):
        domain.keep_fields(camera, lock=lock)


def _rtsp_stream(event, running: bool):
    data = _data(event)
    by = data.get("startedBy") if running else data.get("stoppedBy")
    domain.keep_reading(_camera(event), _at(event), "streaming", running=running, by=by)


def _rtsp_placement(event, placed: bool):
    """Which stream worker ingests the camera; a failure means nothing is recording it."""
    data = _data(event)
    reported = {"placed": placed, "generation": data.get("placementGeneration")}
    reported |= {"workerId": data.get("workerId")} if placed else {"error": str(data.get("error"))[:500]}
    domain.keep_reading(_camera(event), _at(event), "stream_worker", **reported)


def _with(handler, *args):
    return lambda event: handler(event, *args)


HANDLERS: dict[str, Any] = {
    # locks
    "LockCreated": _lock_created,
    "OwnerSet": _grant("uuid", level="OWNER"),
    "OrganizationSet": _organization_set,
    "LockUuidChanged": _lock_uuid_changed,
    "LockOpenRequested": _lock_open_requested,
    "KeyAdded": _with(_key_slot, "add"),
    "KeyRemoved": _with(_key_slot, "remove"),
    "KeyWriteRequested": _with(_key_slot, "write"),
    "ResidentAdded": _grant("uuid", level="USER"),
    "ResidentRemoved": _revoke("uuid"),
    # users. Here lockId is the lock's UUID (in lock events it is SPK's number).
    "AccessibleLockAdded": _grant("lockId", name_field="lockName"),
    "AccessibleLockRemoved": _revoke("lockId"),
    "UserCreated": _user_created,
    "ProfileUpdated": _profile_updated,
    "UserPhoneNumberUpdated": _masked_update("phone", "maskedPhoneNumber"),
    "UserEmailUpdated": _masked_update("email", "maskedEmail"),
    "UserSuspended": _user_status("suspended", "suspendedBy"),
    "UserReactivated": _user_status("active", "reactivatedBy"),
    "PhysicalKeyAdded": _with(_physical_key, "add"),
    "PhysicalKeyRemoved": _with(_physical_key, "remove"),
    "WalletKeyPrepared": _with(_wallet_key, "prepare"),
    "WalletKeyCommitted": _with(_wallet_key, "commit"),
    "WalletKeyRolledBack": _with(_wallet_key, "roll back"),
    "WalletKeyRemoved": _with(_wallet_key, "remove"),
    "WalletKeyAdded": _with(_wallet_key, "add"),
    "LicensePlateAdded": _with(_license_plate, "add"),
    "LicensePlateRemoved": _with(_license_plate, "remove"),
    "DeviceAdded": _user_device(linked=True),
    "DeviceRemoved": _user_device(linked=False),
    # hubs and their Matter devices
    "HubProvisioned": _hub_provisioned,
    "HubClaimed": _hub_claimed,
    "HubReClaimed": _hub_reclaimed,
    "HubRoleSet": _hub_role_set,
    "HubSuspended": _hub_status("suspended", "suspendedBy"),
    "HubDecommissioned": _hub_status("decommissioned", "decommissionedBy"),
    "MigrationStarted": _migration,
    "DeviceMigrationStatusUpdated": _migration,
    "MigrationCompleted": _migration,
    "MatterDeviceCreated": _matter_device,
    "MatterPinSet": _with(_matter_pin, "set"),
    "MatterPinCleared": _with(_matter_pin, "clear"),
    "AlarmTriggered": _sensor_alarm(raising=True),
    "AlarmCleared": _sensor_alarm(raising=False),
    "Shadow Update": _shadow_update,
    # cameras
    "CameraRegistered": _with(_camera_reported, "registered"),
    "CameraUpdated": _camera_reported,
    "CameraDisabled": _camera_status("disabled"),
    "CameraDeleted": _camera_status("deleted"),
    "CameraLinkedToLock": _with(_camera_link, True),
    "CameraUnlinkedFromLock": _with(_camera_link, False),
    "RtspCameraRegistered": _with(_camera_reported, "registered"),
    "RtspCameraUpdated": _camera_reported,
    "RtspCameraDeleted": _camera_status("deleted"),
    "RtspCameraStreamStarted": _with(_rtsp_stream, True),
    "RtspCameraStreamStopped": _with(_rtsp_stream, False),
    "RtspCameraPlaced": _with(_rtsp_placement, True),
    "RtspCameraPlacementFailed": _with(_rtsp_placement, False),
    # temporary keys
    "TempKeyCreated": _with(_temp_key, "create"),
    "TempKeyUpdated": _with(_temp_key, "update"),
    "TempKeyDeleted": _with(_temp_key, "delete"),
    "TempKeyUsed": _with(_temp_key, "use"),
}
_NOT_DELIVERED = (
    "SPK does not re-publish it to partner webhooks (events-webhooks.mdx); device shadow state "
    "arrives as 'Shadow Update', which already tracks configuration drift"
)
_VIDEO_ROLE = "is a 3dEye video-viewing permission, not door access; the portal does not model who may watch video"
_RTSP_ACCESS = "who may view or manage an RTSP camera's video is a video permission, not door access"
# detail-type -> why the portal deliberately does nothing with it.
IGNORED: dict[str, str] = {
    "ReportedShadowUpdated": _NOT_DELIVERED,
    "DesiredShadowUpdated": _NOT_DELIVERED,
    "CameraRoleCreated": f"a camera role {_VIDEO_ROLE}",
    "CameraRoleDeleted": f"a camera role {_VIDEO_ROLE}",
    "CameraRoleUserAssigned": f"a user's camera role {_VIDEO_ROLE}",
    "CameraRoleUserRemoved": f"a user's camera role {_VIDEO_ROLE}",
    "CameraRoleCameraAssigned": f"a camera's place in a role {_VIDEO_ROLE}",
    "CameraRoleCameraRemoved": f"a camera's place in a role {_VIDEO_ROLE}",
    "RtspCameraAccessGranted": _RTSP_ACCESS,
    "RtspCameraAccessRevoked": _RTSP_ACCESS,
}

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
from portal.models import Intercom, Placement

if TYPE_CHECKING:
    from events.models import Endpoint

NAME = "pdk"
LABEL = "ProdataKey"
SIGNATURE_HEADER = "X-PDK-SIGNATURE"
SECRET_FIELDS: frozenset[str] = frozenset()  # PDK events carry no secrets


def authenticate(inbound: Inbound, endpoint: Endpoint) -> None:
    if not (endpoint.secret or endpoint.basic_username):
        raise AuthenticationFailed("the endpoint has no verification configured")
    if endpoint.secret:
        received = inbound.headers.get(SIGNATURE_HEADER)
        if not received:
            raise AuthenticationFailed(f"missing {SIGNATURE_HEADER} header")
        received = received.strip().lower()
        # During a secret rotation both secrets are valid; every candidate is compared in constant time.
        matches = [secrets_match(received, signature(secret, inbound.body)) for secret in endpoint.valid_secrets()]
        if not any(matches):
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
        # Panel events: the documented samples reuse one id across topics (and panels), so the
        # topic, the panel and the occurrence time are part of the identity.
        occurred = optional_id(metadata.get("occurred")) or ""
        panel = optional_id(payload.get("panelId")) or ""
        dedup_key = bounded_key(f"{topic}:{panel}:{event_id}:{occurred}")
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


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _body(event) -> dict:
    return _dict(event.payload.get("body"))


def _text(value, limit: int = 200) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _id(value) -> str | None:
    """A vendor id as text; PDK uses numbers for doors and people, strings for panels and the rest."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        return None
    return str(value)


def _required(mapping: dict, key: str, where: str) -> str:
    found = _id(mapping.get(key))
    if found is None:
        raise ValueError(f"{where} has no usable {key!r}")
    return found


def _panel(event):
    return domain.placement(Placement.Kind.PDK_PANEL, _required(event.payload, "panelId", "the event"))


def _door_by_id(event, door_id: str, name: str = "", *, naming: bool = False):
    """PDK names a door (a device) by panel id and device id.

    Its name moves forward in vendor time. Door events are most of PDK's traffic and nearly all
    repeat the door's name, so only a name that differs is weighed against that time, unless the
    event is about the device itself (``naming``: notification.device.*), which always is. A door
    seen for the first time is created with the name as rename would leave it: nothing differs.
    """
    panel, at = _panel(event), _when(event)
    door = domain.lock(NAME, f"{panel.external_id}:{door_id}", place=panel, reported_name=(name, at))
    if naming or name != door.name:
        domain.rename(door, name, at)
    return door


def _door(event):
    """The door a door.* event is about."""
    metadata = _dict(event.payload.get("metadata"))
    return _door_by_id(event, _required(_body(event), "doorId", "the body"), _text(metadata.get("doorName")))


def _person(event, person_id):
    """The PDK person (row-locked), or None when the event names nobody. Person ids count per
    panel, so the panel id is part of the resident's external id."""
    person_id = _id(person_id)
    if person_id is None:
        return None
    return domain.resident_for_update(NAME, f"{_required(event.payload, 'panelId', 'the event')}:{person_id}")


def _actor(kind: str, value) -> str:
    return f"PDK {kind} {value}" if _id(value) is not None else ""


def _lifecycle(obj, at, status: str, **values) -> bool:
    """set_status, except that a deletion wins a tie with anything else at the same vendor time."""
    if obj.status == "deleted" and obj.status_as_of == at and status != "deleted":
        return False
    return domain.set_status(obj, at, status, **values)


def _door_subject(lock) -> str:
    return f"pdk:door:{lock.external_id}"


# Doors: requests, inputs, relay, modes ---------------------------------------------------------


def _door_request(result: str):
    def handle(event):
        door, body = _door(event), _body(event)
        domain.record_activity(
            event,
            door,
            _when(event),
            action="request",
            result=result,
            method=_text(body.get("requestFactor"), 60),
            actor=_actor("person", body.get("personId")),
            resident=_person(event, body.get("personId")),
            details={k: v for k, v in body.items() if k not in ("doorId", "personId", "requestFactor")},
        )
        if result == "duress":
            domain.raise_alarm("duress", _door_subject(door), event, _when(event), lock_=door)

    return handle


def _door_input(action: str):
    """A door input that is worth a line in the door's history: REX button, emulated scan."""

    def handle(event):
        door, body = _door(event), _body(event)
        domain.record_activity(
            event,
            door,
            _when(event),
            action=action,
            actor=_actor("person", body.get("personId")),
            resident=_person(event, body.get("personId")),
            details={k: v for k, v in body.items() if k not in ("doorId", "personId")},
        )

    return handle


def _relay(locked: bool):
    """The strike relay: energized (on) means the door is unlocked, released (off) locked again."""

    def handle(event):
        door, at = _door(event), _when(event)
        # A strike pulse can report on and off within one millisecond: a tie ends locked.
        tie_with_lock = door.locked_as_of == at and door.locked is True
        if locked or not tie_with_lock:
            domain.move_forward(door, "locked", at, locked=locked)
        domain.record_activity(event, door, at, action="lock" if locked else "unlock", method="relay")

    return handle


# topic part -> (what a manager reads, the key of the mode in the door's details["modes"])
DOOR_MODES = {
    "forceopen": ("force open", "force_open"),
    "forceclose": ("force close", "force_close"),
    "autoopen": ("auto open", "auto_open"),
    "autoopen.override": ("auto open override", "auto_open_override"),
}
MODE_FIELDS = ("ruleId", "ruleName", "aoscan")


def _door_mode(mode: str, on: bool):
    """A door held open or shut by a person or a rule: history, and the mode kept on the door."""

    def handle(event):
        door, at = _door(event), _when(event)
        label, key = DOOR_MODES[mode]
        found = {**_dict(event.payload.get("metadata")), **_body(event)}
        extra = {k: found[k] for k in MODE_FIELDS if k in found}
        domain.keep_reading(door, at, "modes", key, on=on, **extra)
        domain.record_activity(event, door, at, action=f"{label} {'on' if on else 'off'}", details=extra)

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


def _client_command(event):
    """A command sent from the PDK app or API (e.g. a virtual read that opens a door)."""
    body = _body(event)
    details = _dict(body.get("details"))
    door_id = _id(details.get("doorId"))
    if door_id is None:
        return  # commands that name no door change nothing a building manager tracks
    door = _door_by_id(event, door_id, _text(details.get("doorName")))
    result = body.get("result")  # null in the documented sample; whatever PDK reports otherwise
    domain.record_activity(
        event,
        door,
        _when(event),
        action="app command",
        result="" if result is None else str(result)[:40],
        method=_text(body.get("event"), 60),
        actor=_actor("user", body.get("userId")),
        resident=_person(event, details.get("personId")),
        details={k: v for k, v in details.items() if k not in ("doorId", "doorName")},
    )


def _floor_group(event):
    """An elevator reader released its floor group. Elevator readers are PDK devices like doors,
    under the same device ids, so the activation is activity on that reader."""
    body = _body(event)
    reader = _door_by_id(event, _required(body, "readerId", "the body"))
    domain.record_activity(
        event, reader, _when(event), action="floor group activated", details={"elevatorId": body.get("elevatorId")}
    )


# Devices (doors and readers) and intercoms -----------------------------------------------------

DEVICE_FIELDS = (
    "type",
    "readerType",
    "publicIcon",
    "dps",
    "rex",
    "propAlarm",
    "propDelay",
    "forcedAlarm",
    "delay",
    "dwell",
    "port",
    "connection",
    "autoOpenAfterFirstAllow",
    "osdpAddress",
)


def _state(event, change: str) -> dict:
    """What an object is after the change: updates carry newState, the others the whole object."""
    body = _body(event)
    return _dict(body.get("newState")) if change == "updated" else body


def _device(change: str):
    def handle(event):
        at, state = _when(event), _state(event, change)
        door = _door_by_id(event, _required(_body(event), "id", "the body"), _text(state.get("name")), naming=True)
        config = {k: state[k] for k in DEVICE_FIELDS if k in state}
        if config:
            domain.keep_reading(door, at, "device", merge=True, **config)
        if change != "updated":
            domain.lock_presence(door, at, present=change == "created")

    return handle


def _intercom(change: str):
    def handle(event):
        at, state = _when(event), _state(event, change)
        intercom = domain.equipment(Intercom, NAME, _required(_body(event), "id", "the body"), place=_panel(event))
        domain.rename(intercom, _text(state.get("name")), at)
        manufacturer = _text(state.get("manufacturer"), 100)
        if change != "updated":
            fields = {"manufacturer": manufacturer} if manufacturer else {}
            _lifecycle(intercom, at, "deleted" if change == "deleted" else "registered", **fields)

    return handle


# Controllers (endpoints) and their power ---------------------------------------------------------

# topic -> the reading's key under the panel's details["controllers"]["<ioLinkId>:<address>"]
POWER_READINGS = {
    "endpoint.input.pi.status": "input_power",
    "endpoint.input.pb.status": "battery",
    "endpoint.input.pp.status": "peripheral_power",
    "endpoint.input.bh.state": "battery_health",
}


def _controller_key(body: dict) -> str:
    return f"{_required(body, 'ioLinkId', 'the body')}:{_id(body.get('address')) or ''}"


def _power_reading(reading: str):
    def handle(event):
        panel, body = _panel(event), _body(event)
        values = {k: v for k, v in body.items() if k not in ("ioLinkId", "address", "as_of")}
        domain.keep_reading(panel, _when(event), "controllers", _controller_key(body), reading, **values)

    return handle


def _endpoint(present: bool):
    """A controller added to or deleted from a panel's IO link, kept on the panel's details."""

    def handle(event):
        panel, body = _panel(event), _body(event)
        metadata = _dict(event.payload.get("metadata"))
        key = f"{_controller_key(body)}:{_id(body.get('port')) or ''}"
        values = {"present": present, "type": body.get("type"), "port": body.get("port")}
        if metadata.get("ioLinkName"):
            values["ioLinkName"] = metadata["ioLinkName"]
        domain.keep_reading(panel, _when(event), "endpoints", key, **values)

    return handle


def _controller_alarm(kind: str, raising: bool):
    def handle(event):
        panel, body = _panel(event), _body(event)
        subject = f"pdk:controller:{panel.external_id}:{body.get('ioLinkId')}:{body.get('address') or ''}"
        verb = domain.raise_alarm if raising else domain.clear_alarm
        verb(kind, subject, event, _when(event), site_id=panel.site_id)

    return handle


# Panels and the organization -------------------------------------------------------------------


def _panel_connection(online: bool):
    def handle(event):
        panel = _panel(event)
        domain.move_forward(panel, "online", _when(event), online=online)
        verb = domain.clear_alarm if online else domain.raise_alarm
        verb("panel_offline", f"pdk:panel:{panel.external_id}", event, _when(event), site_id=panel.site_id)

    return handle


def _panel_record(change: str):
    """A cloud node registered, renamed or deleted in the organization (organization events)."""

    def handle(event):
        payload, at = event.payload, _when(event)
        panel = domain.placement(Placement.Kind.PDK_PANEL, _required(payload, "id", "the event"))
        domain.rename(panel, _text(payload.get("name")), at)
        if _id(payload.get("ou")):
            domain.keep_reading(panel, at, "registration", ou=payload["ou"])
        if change == "deleted":
            _lifecycle(panel, at, "deleted")
            # A deleted panel never reconnects: its offline alarm has nothing left to wait for.
            domain.clear_alarm("panel_offline", f"pdk:panel:{panel.external_id}", event, at, site_id=panel.site_id)
        elif change == "created":
            _lifecycle(panel, at, "registered")

    return handle


ORGANIZATION_FIELDS = ("parent", "useBluetoothCredentials", "useTouchMobileApp", "intercoms")


def _organization(change: str):
    def handle(event):
        payload, at = event.payload, _when(event)
        org = domain.placement(Placement.Kind.PDK_ORG, _required(payload, "id", "the event"))
        domain.rename(org, _text(payload.get("name")), at)
        settings = {k: payload[k] for k in ORGANIZATION_FIELDS if k in payload}
        if settings:
            domain.keep_reading(org, at, "settings", **settings)
        if change != "updated":
            _lifecycle(org, at, "deleted" if change == "deleted" else "registered")

    return handle


# People ----------------------------------------------------------------------------------------

PERSON_DATES = {"activeDate": "active_from", "expireDate": "expires_at"}
PERSON_DETAILS = ("partition", "metadata")


def _person_change(change: str):
    """notification.person.*: the person's state (newState for updates) as of the event's time."""

    def handle(event):
        at, state = _when(event), _state(event, change)
        person = _person(event, _body(event).get("id"))
        if person is None:
            raise ValueError("the body has no usable 'id'")
        if change == "deleted":
            status = "deleted"
        elif isinstance(state.get("enabled"), bool):
            status = "active" if state["enabled"] else "disabled"
        else:
            status = person.status  # a partial update that leaves the status as it is
        # Dates PDK sends as placeholders or garbage are unknown, not an error.
        fields = {field: time_from_iso(state[key]) for key, field in PERSON_DATES.items() if key in state}
        name = " ".join(filter(None, (_text(state.get("firstName"), 100), _text(state.get("lastName"), 99))))
        if name:
            fields["name"] = name
        if _text(state.get("email"), 254):
            fields["email"] = state["email"]
        kept = {k: state[k] for k in PERSON_DETAILS if k in state}
        if kept:
            fields["details"] = {**person.details, **kept}
        _lifecycle(person, at, status, **fields)

    return handle


def _entity(change: str):
    """entity.*: people added or removed, and their group memberships. Groups, rules, credentials
    and the other entity types are not part of the building model."""

    def handle(event):
        body, at = _body(event), _when(event)
        details = _dict(body.get("details"))
        if details.get("entityType") != "PERSON":
            return
        person = _person(event, details.get("personId"))
        if person is None:
            raise ValueError("a PERSON entity event without a usable 'personId'")
        action = _text(body.get("action"))
        if change == "removed":
            _lifecycle(person, at, "deleted")
        elif action.startswith("person.modified.group.") and _id(details.get("groupId")) is not None:
            member = action.rsplit(".", 1)[-1] == "added"
            name = _text(details.get("groupName"))
            domain.keep_reading(person, at, "groups", _id(details["groupId"]), member=member, name=name)

    return handle


def _reader_error(event):
    panel = _panel(event)
    body = _body(event)
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
    "door.input.virtualread": _door_input("virtual read"),
    "door.input.rex.on": _door_input("exit button pressed"),
    "door.input.rex.off": _door_input("exit button released"),
    "door.input.relay.on": _relay(locked=False),
    "door.input.relay.off": _relay(locked=True),
    **{f"door.{mode}.{state}": _door_mode(mode, state == "on") for mode in DOOR_MODES for state in ("on", "off")},
    "notification.client.command": _client_command,
    "floorgroup.activated": _floor_group,
    "door.alarm.forced": _door_alarm("door_forced", raising=True),
    "door.alarm.forced.cleared": _door_alarm("door_forced", raising=False),
    "door.alarm.propped.on": _door_alarm("door_propped", raising=True),
    "door.alarm.propped.off": _door_alarm("door_propped", raising=False),
    "door.alarm.propped.alloff": _door_alarm("door_propped", raising=False),
    "door.input.dps.opened": _door_position(is_open=True),
    "door.input.dps.closed": _door_position(is_open=False),
    **{f"notification.device.{change}": _device(change) for change in ("created", "updated", "deleted")},
    **{f"notification.intercom.{change}": _intercom(change) for change in ("created", "updated", "deleted")},
    **{topic: _power_reading(reading) for topic, reading in POWER_READINGS.items()},
    "endpoint.added": _endpoint(present=True),
    "endpoint.deleted": _endpoint(present=False),
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
    **{f"panel.{change}": _panel_record(change) for change in ("created", "updated", "deleted")},
    **{f"ou.{change}": _organization(change) for change in ("created", "updated", "deleted")},
    **{f"notification.person.{change}": _person_change(change) for change in ("created", "updated", "deleted")},
    **{f"entity.{change}": _entity(change) for change in ("added", "modified", "removed")},
    "error.card.parse": _reader_error,
    "error.packetized.protocol": _reader_error,
}
# Topic -> why the portal deliberately does nothing with it.
_PORTAL_USERS = (
    "PDK cloud permissions are who may administer the PDK organization (portal users and roles), "
    "not residents or door access; the portal keeps its own staff accounts"
)
IGNORED: dict[str, str] = {
    f"permission.{change}": _PORTAL_USERS for change in ("created", "accepted", "updated", "deleted")
}

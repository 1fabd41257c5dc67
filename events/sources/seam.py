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
    redact,
    require_string,
    time_from_iso,
    utf8_text,
)
from portal import domain
from portal.models import Camera, Credential, Placement

if TYPE_CHECKING:
    from events.models import Endpoint

NAME = "seam"
LABEL = "Seam"
# Door PINs (access codes, and the from/to of a changed code): stored events and the admin show
# "[redacted]"; a building manager never reads a resident's PIN.
SECRET_FIELDS = frozenset({"code"})
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
        payload=redact(payload, SECRET_FIELDS),
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
# A Seam "device" (lock, keypad lock, doorbell) is a Lock row keyed by device_id; a connected
# account is a placement; an access code or ACS credential is a Credential. PIN digits (`code`,
# `from`/`to` of code changes) are never copied out of the raw event into the building model.


def _when(event):
    return event.occurred_at or event.received_at


def _text(payload, key: str) -> str:
    value = payload.get(key)
    return value if isinstance(value, str) else ""


def _account(event):
    """The connected account a device belongs to (its workspace when the event names none)."""
    payload = event.payload
    if isinstance(payload.get("connected_account_id"), str):
        return domain.placement(Placement.Kind.SEAM_ACCOUNT, payload["connected_account_id"])
    return domain.placement(Placement.Kind.SEAM_WORKSPACE, str(payload.get("workspace_id") or "unknown"))


def _device(event):
    return domain.lock(NAME, require_string(event.payload, "device_id"), place=_account(event))


def _subject(device) -> str:
    return f"seam:device:{device.external_id}"


def _errors(payload) -> list[str]:
    """The error codes in the event's *_errors lists (why a code wasn't set, why an account dropped)."""
    codes = []
    for key in ("access_code_errors", "device_errors", "connected_account_errors", "acs_system_errors"):
        items = payload.get(key)
        for item in items if isinstance(items, list) else ():
            if isinstance(item, dict) and isinstance(item.get("error_code"), str):
                codes.append(item["error_code"][:100])
    return codes


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
            method=str(payload.get("method") or "")[:60],
            actor=f"access code {payload['access_code_id']}"[:200] if payload.get("access_code_id") else "",
        )

    return handle


def _access_denied(event):
    device = _device(event)
    code = event.payload.get("access_code_id")
    domain.record_activity(
        event,
        device,
        _when(event),
        action="request",
        result="denied",
        actor=f"access code {code}"[:200] if code else "",
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
    domain.move_forward(device, "battery", _when(event), battery_level=level, battery_status=str(status)[:16])
    if status in ("low", "critical"):
        severity = "major" if status == "critical" else ""
        domain.raise_alarm("low_battery", _subject(device), event, _when(event), lock_=device, severity=severity)
    elif status in ("good", "full"):
        domain.clear_alarm("low_battery", _subject(device), event, _when(event), lock_=device)


def _tampered(event):
    device = _device(event)
    domain.raise_alarm("tampered", _subject(device), event, _when(event), lock_=device)


def _presence(present: bool):
    """Added to Seam (or re-added), removed from the account, deleted: removed_at, in vendor time."""

    def handle(event):
        device = _device(event)
        domain.rename(device, _text(event.payload, "device_name")[:200], _when(event))
        domain.lock_presence(device, _when(event), present=present)

    return handle


def _name_changed(event):
    domain.rename(_device(event), _text(event.payload, "device_name")[:200], _when(event))


def _reading(key: str, **values):
    """A device condition a manager may need to see (keypad attached, flaky link, privacy mode),
    kept on the lock's details with the vendor time it is as of."""

    def handle(event):
        errors = _errors(event.payload)
        domain.keep_reading(_device(event), _when(event), key, **values, **({"errors": errors} if errors else {}))

    return handle


def _doorbell(event):
    device, payload = _device(event), event.payload
    media = {k: payload[k] for k in ("image_url", "video_url") if isinstance(payload.get(k), str)}
    domain.record_activity(event, device, _when(event), action="doorbell", result="rang", details=media)


def _noise(event):
    """Noise sensors (Minut, NoiseAware) are not doors: the alarm is placed by the sensor's account."""
    payload = event.payload
    device_id = require_string(payload, "device_id")
    domain.raise_alarm("noise", f"seam:device:{device_id}", event, _when(event), site_id=_account(event).site_id)


def _camera_activated(event):
    payload = event.payload
    camera = domain.equipment(Camera, NAME, require_string(payload, "device_id"), place=_account(event))
    reason = {k: payload[k] for k in ("activation_reason", "motion_sub_type") if isinstance(payload.get(k), str)}
    domain.keep_reading(camera, _when(event), "last_activation", **reason)


# Access codes: event -> (status, issued True / removed False / neither None, alarm "raise"/"clear"/None).
# Once a code is set, or no longer meant to be on the device, "access code not set" is over.
ACCESS_CODE_STATES = {
    "access_code.created": ("created", True, None),
    "access_code.scheduled_on_device": ("scheduled on device", True, None),
    "access_code.set_on_device": ("set on device", True, "clear"),
    "access_code.delay_in_setting_on_device": ("delay in setting on device", None, None),
    "access_code.failed_to_set_on_device": ("failed to set on device", None, "raise"),
    "access_code.removed_from_device": ("removed from device", False, "clear"),
    "access_code.delay_in_removing_from_device": ("delay in removing from device", None, None),
    "access_code.failed_to_remove_from_device": ("failed to remove from device", None, None),
    "access_code.deleted": ("deleted", False, "clear"),
    "access_code.deleted_external_to_seam": ("deleted outside Seam", False, "clear"),
    "access_code.modified_external_to_seam": ("modified outside Seam", None, None),
    "access_code.unmanaged.created": ("unmanaged", True, None),
    "access_code.unmanaged.converted_to_managed": ("converted to managed", True, None),
    "access_code.unmanaged.failed_to_convert_to_managed": ("failed to convert to managed", None, None),
    "access_code.unmanaged.removed": ("removed from device", False, "clear"),
}


def _access_code(event):
    """The access code (its lock is the event's device); its PIN is never read from the event."""
    device = _device(event)
    code_id = require_string(event.payload, "access_code_id")
    return domain.credential(NAME, Credential.Kind.ACCESS_CODE, code_id, lock_=device), device


def _access_code_state(status: str, issued: bool | None, alarm: str | None):
    def handle(event):
        code, device = _access_code(event)
        at, kind = _when(event), Credential.Kind.ACCESS_CODE
        if issued is True:
            domain.issue_credential(NAME, kind, code.external_id, at, lock_=device)
        elif issued is False:
            domain.remove_credential(NAME, kind, code.external_id, at, lock_=device)
        code.refresh_from_db()
        if domain.set_status(code, at, status):
            domain.keep_details(code, errors=_errors(event.payload))
        if alarm:
            verb = domain.raise_alarm if alarm == "raise" else domain.clear_alarm
            verb("access_code_not_set", f"seam:access_code:{code.external_id}", event, at, lock_=device)

    return handle


def _change(payload, side: str) -> dict:
    value = payload.get(side)
    return value if isinstance(value, dict) else {}


def _access_code_changed(event):
    """Which properties changed, never their values (one of them may be the PIN)."""
    code, _ = _access_code(event)
    changes = event.payload.get("changed_properties")
    changes = changes if isinstance(changes, list) else []
    names = [c["property"][:100] for c in changes if isinstance(c, dict) and isinstance(c.get("property"), str)]
    reason = _text(event.payload, "change_reason")
    domain.keep_reading(code, _when(event), "last_change", properties=names, reason=reason)


def _access_code_renamed(event):
    code, _ = _access_code(event)
    name = _text(_change(event.payload, "to"), "name") or _text(event.payload, "name")
    if name:
        domain.move_fields_forward(code, "label_reported", _when(event), label=name[:200])


def _access_code_pin_changed(event):
    code, _ = _access_code(event)
    domain.keep_reading(code, _when(event), "pin_changed")


def _access_code_time_frame(event):
    code, _ = _access_code(event)
    to = _change(event.payload, "to")
    starts, ends = time_from_iso(to.get("starts_at")), time_from_iso(to.get("ends_at"))
    domain.move_fields_forward(code, "time_frame", _when(event), valid_from=starts, valid_until=ends)


def _backup_code_pulled(event):
    code, _ = _access_code(event)
    backup = _text(event.payload, "backup_access_code_id")
    domain.keep_reading(code, _when(event), "backup_code_pulled", backup_access_code_id=backup)


def _acs_user(status: str):
    def handle(event):
        account = _account(event)
        person = domain.resident_for_update(NAME, require_string(event.payload, "acs_user_id"))
        if account.site_id and person.site_id is None:
            domain.resident(NAME, person.external_id, site=account.site)
        domain.set_status(person, _when(event), status)
        domain.keep_details(person, acs_system_id=_text(event.payload, "acs_system_id") or None)

    return handle


def _acs_credential(status: str, issued: bool):
    """A card or mobile credential of Seam's access systems; the event doesn't say whose."""

    def handle(event):
        at, kind = _when(event), Credential.Kind.CARD
        credential_id = require_string(event.payload, "acs_credential_id")
        verb = domain.issue_credential if issued else domain.remove_credential
        found = verb(NAME, kind, credential_id, at)
        found.refresh_from_db()
        domain.set_status(found, at, status)
        domain.keep_details(found, acs_system_id=_text(event.payload, "acs_system_id") or None)

    return handle


def _acs_entrance(present: bool):
    """An access system's door: a lock whose id is the entrance's (prefixed: not a device id)."""

    def handle(event):
        entrance_id = require_string(event.payload, "acs_entrance_id")
        door = domain.lock(NAME, f"acs_entrance:{entrance_id}", place=_account(event))
        domain.lock_presence(door, _when(event), present=present)

    return handle


def _acs_system_connection(online: bool):
    """An access system (a building's controller, reached through Seam) lost or regained its link."""

    def handle(event):
        system_id = require_string(event.payload, "acs_system_id")
        verb = domain.clear_alarm if online else domain.raise_alarm
        verb(
            "controller_comm_loss", f"seam:acs_system:{system_id}", event, _when(event), site_id=_account(event).site_id
        )

    return handle


def _connected_account(event):
    account_id = require_string(event.payload, "connected_account_id")
    return domain.placement(Placement.Kind.SEAM_ACCOUNT, account_id)


def _account_connection(online: bool):
    def handle(event):
        account, at = _connected_account(event), _when(event)
        if domain.move_forward(account, "online", at, online=online):
            domain.keep_details(account, errors=_errors(event.payload))
        verb = domain.clear_alarm if online else domain.raise_alarm
        verb("account_disconnected", f"seam:account:{account.external_id}", event, at, site_id=account.site_id)

    return handle


def _account_status(status: str):
    def handle(event):
        account, at = _connected_account(event), _when(event)
        domain.set_status(account, at, status)
        if status == "deleted":  # a deleted account's disconnection needs no one anymore
            subject = f"seam:account:{account.external_id}"
            domain.clear_alarm("account_disconnected", subject, event, at, site_id=account.site_id)

    return handle


def _action_attempt(action: str, result: str):
    """A remote lock/unlock requested through Seam, and whether the device did it."""

    def handle(event):
        payload = event.payload
        device = _device(event) if isinstance(payload.get("device_id"), str) and payload["device_id"] else None
        attempt = _text(payload, "action_attempt_id")
        domain.record_activity(
            event,
            device,
            _when(event),
            action=action,
            result=result,
            method="remote",
            actor=f"action attempt {attempt}"[:200] if attempt else "",
            details={"status": _text(payload, "status")},
        )

    return handle


HANDLERS: dict[str, Any] = {
    "lock.locked": _lock_action(locked=True),
    "lock.unlocked": _lock_action(locked=False),
    "lock.access_denied": _access_denied,
    "device.connected": _connection(online=True),
    "device.disconnected": _connection(online=False),
    "device.unmanaged.connected": _connection(online=True),
    "device.unmanaged.disconnected": _connection(online=False),
    "device.low_battery": _battery,
    "device.battery_status_changed": _battery,
    "device.tampered": _tampered,
    "device.added": _presence(present=True),
    "device.removed": _presence(present=False),
    "device.deleted": _presence(present=False),
    "device.name_changed": _name_changed,
    "device.converted_to_unmanaged": _reading("management", managed=False),
    "device.unmanaged.converted_to_managed": _reading("management", managed=True),
    "device.accessory_keypad_connected": _reading("accessory_keypad", connected=True),
    "device.accessory_keypad_disconnected": _reading("accessory_keypad", connected=False),
    "device.connection_became_flaky": _reading("connection", flaky=True),
    "device.connection_stabilized": _reading("connection", flaky=False),
    "device.salto.privacy_mode_activated": _reading("privacy_mode", active=True),
    "device.salto.privacy_mode_deactivated": _reading("privacy_mode", active=False),
    "device.third_party_integration_detected": _reading("third_party_integration", detected=True),
    "device.third_party_integration_no_longer_detected": _reading("third_party_integration", detected=False),
    "device.error.subscription_required": _reading("subscription", required=True),
    "device.error.subscription_required.resolved": _reading("subscription", required=False),
    "device.doorbell_rang": _doorbell,
    "noise_sensor.noise_threshold_triggered": _noise,
    "camera.activated": _camera_activated,
    **{event_type: _access_code_state(*state) for event_type, state in ACCESS_CODE_STATES.items()},
    "access_code.changed": _access_code_changed,
    "access_code.name_changed": _access_code_renamed,
    "access_code.code_changed": _access_code_pin_changed,
    "access_code.time_frame_changed": _access_code_time_frame,
    "access_code.backup_access_code_pulled": _backup_code_pulled,
    "acs_user.created": _acs_user("active"),
    "acs_user.deleted": _acs_user("deleted"),
    "acs_credential.issued": _acs_credential("issued", issued=True),
    "acs_credential.reissued": _acs_credential("reissued", issued=True),
    "acs_credential.invalidated": _acs_credential("invalidated", issued=False),
    "acs_credential.deleted": _acs_credential("deleted", issued=False),
    "acs_entrance.added": _acs_entrance(present=True),
    "acs_entrance.removed": _acs_entrance(present=False),
    "acs_system.connected": _acs_system_connection(online=True),
    "acs_system.disconnected": _acs_system_connection(online=False),
    "connected_account.connected": _account_connection(online=True),
    "connected_account.disconnected": _account_connection(online=False),
    "connected_account.created": _account_status("created"),
    "connected_account.successful_login": _account_status("logged in"),
    "connected_account.completed_first_sync": _account_status("synced"),
    "connected_account.completed_first_sync_after_reconnection": _account_status("synced"),
    "connected_account.reauthorization_requested": _account_status("reauthorization requested"),
    "connected_account.deleted": _account_status("deleted"),
    "action_attempt.lock_door.succeeded": _action_attempt("remote lock", "succeeded"),
    "action_attempt.lock_door.failed": _action_attempt("remote lock", "failed"),
    "action_attempt.unlock_door.succeeded": _action_attempt("remote unlock", "succeeded"),
    "action_attempt.unlock_door.failed": _action_attempt("remote unlock", "failed"),
}

_GRANT = "Seam access grants aren't mirrored: the event names the grant"
_METHOD = "access methods aren't mirrored: the event names only the method and its grants, no person or door"
_SIMULATION = "a sandbox-only simulation request on Seam test devices, not something that happened at a door"
_WEBVIEW = "Connect Webview is Seam's account-linking UI; connected_account.* events carry the state"
_THERMOSTAT = "thermostats are not part of the building model"
_SPACE = "Seam spaces group devices for Seam's own access grants; buildings are assigned in the portal"
# Event type -> why the portal deliberately does nothing with it.
IGNORED: dict[str, str] = {
    "access_code.mutations_requested": "a request only: its outcome arrives as changed / set_on_device / failed_to_*",
    "access_grant.created": f"{_GRANT}, not whom it is for or which doors",
    "access_grant.deleted": f"{_GRANT}, not whom it was for or which doors",
    "access_grant.access_granted_to_all_doors": f"{_GRANT} only; the codes and cards it made arrive on their own",
    "access_grant.access_granted_to_door": f"{_GRANT} and an entrance but not the person, so no grant can be kept",
    "access_grant.access_to_door_lost": f"{_GRANT} and an entrance but not the person, so no grant can be revoked",
    "access_grant.access_times_changed": f"{_GRANT}'s new times, not whose access or which doors they bound",
    "access_grant.could_not_create_requested_access_methods": f"{_GRANT} and an error, not a person or a door",
    "access_method.created": f"{_METHOD}; the code or card it becomes arrives as access_code / acs_credential",
    "access_method.issued": f"{_METHOD} (and a PIN, never stored); the code arrives as access_code events",
    "access_method.reissued": f"{_METHOD} (and a PIN, never stored); the code arrives as access_code events",
    "access_method.revoked": f"{_METHOD}; the removal arrives as access_code / acs_credential events",
    "access_method.deleted": f"{_METHOD}; the removal arrives as access_code / acs_credential events",
    "access_method.card_encoding_required": f"{_METHOD}; encoding a card is a front-desk task in Seam's tools",
    "access_method.delay_in_issuing": f"{_METHOD}; the code's own delay_in_setting / failed_to_set events cover it",
    "access_method.failed_to_issue": f"{_METHOD}; the code's own failed_to_set_on_device event raises the alarm",
    "acs_access_group.deleted": "access groups aren't mirrored; a member's access shows through their credentials",
    "acs_encoder.added": "card encoders are desk equipment for writing cards, not doors",
    "acs_encoder.removed": "card encoders are desk equipment for writing cards, not doors",
    "acs_system.added": "nothing to place yet: the system's doors arrive as acs_entrance.added, its link as connected",
    "action_attempt.simulate_keypad_code_entry.succeeded": _SIMULATION,
    "action_attempt.simulate_keypad_code_entry.failed": _SIMULATION,
    "action_attempt.simulate_manual_lock_via_keypad.succeeded": _SIMULATION,
    "action_attempt.simulate_manual_lock_via_keypad.failed": _SIMULATION,
    "client_session.deleted": "a client session is a Seam app login token, not building state",
    "connect_webview.login_failed": _WEBVIEW,
    "connect_webview.login_succeeded": _WEBVIEW,
    "phone.deactivated": "a phone is a resident's mobile-key handset, not a door; its keys arrive as acs_credential",
    "space.created": _SPACE,
    "space.deleted": _SPACE,
    "space.device_membership_changed": _SPACE,
    "thermostat.climate_preset_activated": _THERMOSTAT,
    "thermostat.manually_adjusted": _THERMOSTAT,
    "thermostat.temperature_changed": _THERMOSTAT,
    "thermostat.temperature_reached_set_point": _THERMOSTAT,
    "thermostat.temperature_threshold_exceeded": _THERMOSTAT,
    "thermostat.temperature_threshold_no_longer_exceeded": _THERMOSTAT,
}

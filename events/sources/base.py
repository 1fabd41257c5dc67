"""What every vendor module shares: the inbound request, the errors it raises, parsing helpers."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from django.utils.dateparse import parse_datetime


class AuthenticationFailed(Exception):
    """The request is not from who the endpoint expects; the ingress answers 401."""


class InvalidPayload(Exception):
    """The body can't be stored as an event; the message names the problem (a 400)."""


@dataclass
class Inbound:
    """A webhook request as the vendor modules see it: headers and the raw body bytes."""

    headers: Mapping[str, str]  # case-insensitive (Django's HttpHeaders)
    body: bytes

    @cached_property
    def payload(self) -> dict[str, Any]:
        return parse_json_object(self.body)


@dataclass(frozen=True)
class IdentifiedEvent:
    """What the store needs to know about one vendor event."""

    event_type: str
    dedup_key: str
    occurred_at: datetime | None
    payload: dict[str, Any]
    message_id: str = ""
    flags: list[str] = field(default_factory=list)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


# JSON escapes that decode to text PostgreSQL's jsonb refuses: NUL and lone surrogates.
_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_UNSTORABLE_CHARS = re.compile("[\x00\ud800-\udfff]")


def utf8_text(body: bytes) -> str:
    """The body as text: JSON on the wire is UTF-8 (RFC 8259), an optional BOM aside."""
    try:
        return body.decode("utf-8-sig")  # strict: also refuses encoded surrogates
    except UnicodeDecodeError as exc:
        raise InvalidPayload(f"the body is not UTF-8 (byte {exc.start} is invalid)") from None


def parse_json_value(text: str) -> Any:
    """Strict JSON: no NaN or Infinity, no number too large to store; text PostgreSQL refuses
    (NUL, unpaired surrogates) is replaced by U+FFFD."""
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as exc:
        if "int_max_str_digits" in str(exc) or "integer string conversion" in str(exc):
            raise ValueError("a number has too many digits") from None
        raise
    if _too_deep(value):
        raise ValueError(f"nested deeper than {MAX_NESTING} levels")
    if _UNSTORABLE_ESCAPE.search(text):
        value = replace_unstorable(value)
    return value


# No vendor nests its events more than a few levels; much deeper JSON is refused (a 400) before
# anything walks it recursively (redaction, hashing, the database driver).
MAX_NESTING = 64


def _too_deep(value: Any) -> bool:
    """Whether the parsed JSON nests deeper than MAX_NESTING, found without recursion."""
    level = [value]
    for _ in range(MAX_NESTING + 1):
        level = [
            child
            for container in level
            if isinstance(container, (dict, list))
            for child in (container.values() if isinstance(container, dict) else container)
            if isinstance(child, (dict, list))
        ]
        if not level:
            return False
    return True


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Parse a webhook body; anything but a UTF-8 JSON object is an InvalidPayload."""
    text = utf8_text(body)
    if not text.strip():
        raise InvalidPayload("the body is empty; expected a JSON object")
    try:
        payload = parse_json_value(text)
    except ValueError as exc:
        raise InvalidPayload(f"the body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(payload, dict):
        raise InvalidPayload(f"the body is a JSON {type(payload).__name__}; expected an object")
    return payload


def replace_unstorable(value: Any) -> Any:
    """NUL and unpaired surrogates become U+FFFD; the raw body keeps the original bytes."""
    if isinstance(value, str):
        return _UNSTORABLE_CHARS.sub("\ufffd", value)
    if isinstance(value, list):
        return [replace_unstorable(v) for v in value]
    if isinstance(value, dict):
        return {replace_unstorable(k): replace_unstorable(v) for k, v in value.items()}
    return value


def canonical_sha256(payload: Any) -> str:
    """Identity of an event that carries no id of its own: its canonical JSON's digest."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def bounded_key(key: str) -> str:
    """Dedup keys must fit the column; a longer one is replaced by its digest."""
    if len(key) <= 200:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def require_string(payload: Mapping[str, Any], name: str, *, where: str = "the body") -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidPayload(f"{where} lacks {name!r} (a non-empty string)")
    if len(value) > 150:
        raise InvalidPayload(f"{name!r} in {where} is longer than 150 characters")
    return value


def optional_id(value: Any) -> str | None:
    """A vendor id as text: strings and integers count, anything else means absent."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


# Vendor times outside this window are typos or attacks; they are treated as unknown so they can
# neither overflow on the way back from the database nor win every "newest state" comparison.
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2200, 1, 1, tzinfo=UTC)


def plausible(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    try:
        moment = moment.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    return moment if EARLIEST_TIME <= moment < LATEST_TIME else None


def time_from_epoch_ms(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return plausible(datetime.fromtimestamp(value / 1000, tz=UTC))
    except (OverflowError, OSError, ValueError):
        return None


def time_from_iso(value: Any) -> datetime | None:
    """ISO-8601 text to an aware datetime; placeholders and garbage mean "unknown" (None)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = parse_datetime(value.replace("z", "Z"))
    except (ValueError, OverflowError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return plausible(parsed)


def first_time(*candidates: datetime | None) -> datetime | None:
    return next((c for c in candidates if c is not None), None)


def secrets_match(received: str | bytes | None, expected: str | bytes) -> bool:
    """Constant-time comparison of a received credential with the configured one."""
    if received is None:
        return False
    if isinstance(received, str):
        received = received.encode("utf-8", "surrogatepass")
    if isinstance(expected, str):
        expected = expected.encode("utf-8")
    return hmac.compare_digest(received, expected)


REDACTED = "[redacted]"


def redact(value: Any, names: frozenset[str]) -> Any:
    """The value with every field named in ``names`` (at any depth) replaced by "[redacted]".

    For secrets vendors put in event payloads (camera passwords, door PINs): the stored event and
    the admin never show them; only the raw delivery keeps the bytes, until it is pruned.
    """
    if isinstance(value, dict):
        return {k: REDACTED if k in names and v is not None else redact(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, names) for v in value]
    return value

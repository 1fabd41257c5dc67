"""How each vendor signs a delivery, written independently of the portal's own code."""

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"

PDK_SECRET = "vvHkDbPeIespEKDprlvzlstDPPhLJnxG"
SEAM_SECRET = "whsec_" + base64.b64encode(b"seam-test-signing-key-0123456789").decode()
SPK_TOKEN = "spk-static-token-7f3a9c"
SPK_PARTNER = "acme-corp"


def fixture_bytes(vendor: str, name: str) -> bytes:
    return (FIXTURES / vendor / name).read_bytes()


def fixture_files(vendor: str) -> list[Path]:
    return sorted((FIXTURES / vendor).glob("*.json"))


def pdk_signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def pdk_headers(body: bytes, secret: str = PDK_SECRET) -> dict[str, str]:
    return {"X-PDK-SIGNATURE": pdk_signature(secret, body)}


def seam_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def seam_headers(body: bytes, secret: str = SEAM_SECRET, *, timestamp: int | None = None, prefix: str = "svix"):
    message_id = f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        f"{prefix}-id": message_id,
        f"{prefix}-timestamp": str(timestamp),
        f"{prefix}-signature": seam_signature(secret, message_id, timestamp, body),
    }


def spk_headers(body: bytes, token: str = SPK_TOKEN, header: str = "X-Api-Key") -> dict[str, str]:
    return {header: token}


SIGNERS = {"pdk": pdk_headers, "seam": seam_headers, "spk": spk_headers}

ENDPOINT_SETTINGS = {
    "pdk": {"secret": PDK_SECRET},
    "seam": {"secret": SEAM_SECRET},
    "spk": {"secret": SPK_TOKEN, "token_header": "X-Api-Key", "partner_id": SPK_PARTNER},
}


def with_changes(body: bytes, **changes) -> bytes:
    payload = json.loads(body)
    payload.update(changes)
    return json.dumps(payload).encode()

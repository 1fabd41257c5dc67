"""A fake PDK accounts server over real HTTP on 127.0.0.1: the token endpoint and the hooks API as
PDK documents them, plus faults on demand (401 for expired tokens, 429 with reset headers, 5xx,
slow answers), and deliveries signed the way PDK signs them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

CLIENT_ID = "portal-client"
CLIENT_SECRET = "portal-client-secret"
ORG_ID = "5f92b1682633360001cd3a4f"
USER_ID = "644a19ba6e22d40001eec732"
ORG_TOPIC_PREFIXES = ("ou.", "panel.created", "panel.deleted", "panel.updated", "permission.")
HOOK_PATH = re.compile(r"^/api/ous/(?P<org>[^/]+)/hooks(?:/(?P<id>[^/]+))?/?$")


@dataclass
class Fault:
    method: str
    path: str | None  # a path prefix, or None for any path
    status: int | None  # None: answer normally (after the delay)
    times: int
    delay: float = 0.0
    headers: dict = field(default_factory=dict)
    message: str = ""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that gave up on a slow answer closes the socket: expected here


class FakePdk:
    def __init__(self, *, token_lifetime: int = 300):
        self.token_lifetime = token_lifetime
        self.hooks: dict[str, dict] = {}
        self.tokens: dict[str, float] = {}
        self.token_calls = 0
        self.requests: list[tuple[str, str]] = []
        self.faults: list[Fault] = []
        self.lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakePdk:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- what tests arrange ------------------------------------------------------------------

    def fail(self, method: str, status: int | None, *, times: int = 1, path: str | None = None, **kwargs) -> None:
        with self.lock:
            self.faults.append(Fault(method.upper(), path, status, times, **kwargs))

    def slow(self, method: str, seconds: float, *, times: int = 1, path: str | None = None) -> None:
        self.fail(method, None, times=times, path=path, delay=seconds)

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens = dict.fromkeys(self.tokens, 0.0)

    def add_hook(self, **fields) -> str:
        """A hook someone made in PDK directly, not through the portal."""
        hook_id = uuid.uuid4().hex[:24]
        hook = {
            "id": hook_id,
            "name": "Made in PDK",
            "url": "https://integrator.example.com/pdk",
            "scope": "ouRecursive",
            "authentication": {"type": "None"},
            "events": ["door.request.allowed"],
            "active": True,
            "sslVerification": True,
            "secrecyLevel": 1,
            "expiresAt": None,
            "userId": "5f0000000000000000000001",
            "odometer": 7,
            "secret": "their-own-secret",
        }
        hook.update(fields)
        with self.lock:
            self.hooks[hook_id] = hook
        return hook_id

    def count(self, method: str, path_prefix: str = "") -> int:
        return sum(1 for m, p in self.requests if m == method and p.startswith(path_prefix))

    def deliver(self, hook_id: str, body: bytes) -> tuple[int, bytes]:
        """POST an event to the hook's URL as PDK does: X-PDK-SIGNATURE = hex HMAC-SHA1 of the raw body.

        The test has no TLS certificate, so the fake speaks plain HTTP to the host and path of the
        https URL it was given.
        """
        hook = self.hooks[hook_id]
        url = urlparse(hook["url"])
        headers = {"Content-Type": "application/json"}
        if hook.get("secret"):
            headers["X-PDK-SIGNATURE"] = hmac.new(hook["secret"].encode(), body, hashlib.sha1).hexdigest()
        auth = hook.get("authentication") or {}
        if auth.get("type") == "Basic":
            headers["Authorization"] = (
                "Basic " + base64.b64encode(f"{auth['user']}:{auth['password']}".encode()).decode()
            )
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=15)
        try:
            conn.request("POST", url.path, body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read()
        finally:
            conn.close()
        with self.lock:
            hook["odometer"] = hook.get("odometer", 0) + 1
        return response.status, answer

    # --- the server --------------------------------------------------------------------------

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, status: int, body=None, headers: dict | None = None):
                raw = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = urlparse(self.path).path
                with fake.lock:
                    fake.requests.append((self.command, path))
                    fault = next(
                        (
                            f
                            for f in fake.faults
                            if f.times > 0 and f.method == self.command and (f.path is None or path.startswith(f.path))
                        ),
                        None,
                    )
                    if fault:
                        fault.times -= 1
                if fault:
                    time.sleep(fault.delay)
                    if fault.status is not None:
                        return self._answer(fault.status, {"message": fault.message or "fault"}, fault.headers)
                if path == "/oauth2/token" and self.command == "POST":
                    return self._token(raw)
                match = HOOK_PATH.match(path)
                if not match:
                    return self._answer(404, {"message": "Not Found"})
                if not self._authorized():
                    return self._answer(401, {"message": "Unauthorized"})
                if match["org"] != ORG_ID:
                    return self._answer(403, {"message": "Forbidden"})
                return self._hooks(match["id"], raw)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def _token(self, raw: bytes):
                expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
                if self.headers.get("Authorization") != f"Basic {expected}":
                    return self._answer(401, {"error": "invalid_client", "message": "Invalid client credentials"})
                if parse_qs(raw.decode()).get("grant_type") != ["client_credentials"]:
                    return self._answer(400, {"error": "unsupported_grant_type"})
                token = "id-" + uuid.uuid4().hex
                with fake.lock:
                    fake.token_calls += 1
                    fake.tokens[token] = time.monotonic() + fake.token_lifetime
                answer = {"id_token": token, "access_token": "not-for-the-api", "expires_in": fake.token_lifetime}
                return self._answer(200, {**answer, "token_type": "Bearer"})

            def _authorized(self) -> bool:
                scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
                with fake.lock:
                    return scheme == "Bearer" and fake.tokens.get(token, 0) > time.monotonic()

            def _hooks(self, hook_id: str | None, raw: bytes):
                if hook_id is None and self.command == "GET":
                    with fake.lock:
                        return self._answer(200, [dict(h) for h in fake.hooks.values()])
                if hook_id is None and self.command == "POST":
                    body = json.loads(raw or b"{}")
                    if problem := _invalid(body):
                        return self._answer(400, {"message": problem})
                    new_id = uuid.uuid4().hex[:24]
                    hook = {"active": True, "sslVerification": True, "secrecyLevel": 1, "expiresAt": None}
                    hook.update(body)
                    hook.update(id=new_id, userId=USER_ID, odometer=0)
                    hook.setdefault("secret", None)
                    with fake.lock:
                        fake.hooks[new_id] = hook
                    return self._answer(201, {"id": new_id})
                with fake.lock:
                    hook = fake.hooks.get(hook_id or "")
                if hook is None:
                    return self._answer(404, {"message": "Hook not found"})
                if self.command == "GET":
                    return self._answer(200, dict(hook))
                if self.command == "DELETE":
                    with fake.lock:
                        fake.hooks.pop(hook_id, None)
                    return self._answer(204)
                if self.command == "PUT":
                    body = json.loads(raw or b"{}")
                    missing = {"active", "sslVerification", "secrecyLevel"} - body.keys()
                    if problem := _invalid(body) or (missing and f"missing {sorted(missing)}"):
                        return self._answer(400, {"message": problem})
                    kept = {k: hook[k] for k in ("id", "userId", "odometer")}
                    replaced = {"expiresAt": None, "secret": None, **body, **kept}
                    with fake.lock:
                        fake.hooks[hook_id] = replaced
                    return self._answer(204)
                return self._answer(405, {"message": "Method Not Allowed"})

        return Handler


def _invalid(body: dict) -> str | None:
    """PDK's own checks on a create or an update, enough to catch a client sending nonsense."""
    for name in ("name", "url", "scope", "authentication", "events"):
        if name not in body:
            return f"{name} is required"
    if len(body["name"]) > 70:
        return "name is longer than 70 characters"
    if not str(body["url"]).startswith("https://"):
        return "url must use HTTPS"
    events = body["events"]
    if not events:
        return "events must not be empty"
    kinds = {e.startswith(ORG_TOPIC_PREFIXES) for e in events}
    if len(kinds) > 1:
        return "event types may not be mixed"
    if len(body.get("secret") or "") > 255:
        return "secret is longer than 255 characters"
    return None

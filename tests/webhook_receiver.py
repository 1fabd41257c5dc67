"""A real webhook receiver on 127.0.0.1 that checks Standard Webhooks signatures with the
``standardwebhooks`` package and answers as told: 200, 500, 429 with Retry-After, 410, or slowly."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import standardwebhooks


class Received:
    def __init__(self, headers: dict, body: bytes, verified: bool, error: str):
        self.headers, self.body, self.verified, self.error = headers, body, verified, error
        self.at = time.time()
        self.payload = json.loads(body) if verified else None


class WebhookReceiver:
    """``answers``: what to answer next, in order (status, headers, delay seconds); then 200."""

    def __init__(self, secret: str = ""):
        self.secret = secret
        self.answers: list[tuple[int, dict, float]] = []
        self.received: list[Received] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    standardwebhooks.Webhook(receiver.secret).verify(body, headers)
                    verified, error = True, ""
                except Exception as exc:
                    verified, error = False, str(exc)
                with receiver.lock:
                    receiver.received.append(Received(headers, body, verified, error))
                    status, extra, delay = receiver.answers.pop(0) if receiver.answers else (200, {}, 0)
                if delay:
                    time.sleep(delay)
                answer = json.dumps({"ok": 200 <= status < 300, "verified": verified}).encode()
                try:
                    self.send_response(status if verified else 401)
                    for name, value in extra.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender gave up waiting

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/alarms"

    def answer(self, status: int, headers: dict | None = None, delay: float = 0, times: int = 1) -> None:
        with self.lock:
            self.answers.extend([(status, headers or {}, delay)] * times)

    def __enter__(self):
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

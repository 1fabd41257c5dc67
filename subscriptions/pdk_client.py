"""The PDK API client: a shared cached token, the hooks CRUD, timeouts, and bounded retries."""

from __future__ import annotations

import hashlib
import logging
import random
import time
import uuid
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from django.conf import settings
from django.core.cache import cache

log = logging.getLogger(__name__)

# The token is refreshed this long before PDK says it expires (its lifetime is 300 s).
TOKEN_MARGIN_SECONDS = 30
BACKOFF_BASE_SECONDS = 0.25


class PdkError(Exception):
    """A call PDK refused or never answered; `status` is PDK's HTTP status (None: no answer)."""

    def __init__(self, status: int | None, message: str, *, during: str = ""):
        self.status, self.message, self.during = status, message, during
        prefix = f"{during}: " if during else ""
        text = f"PDK answered {status}: {message}" if status else f"PDK did not answer: {message}"
        super().__init__(prefix + text)


class PdkClient:
    """One PDK organization, reached with one connection's OAuth client."""

    def __init__(self, connection, *, session: requests.Session | None = None):
        self.connection = connection
        self.base = connection.accounts_url.rstrip("/")
        self.session = session or requests.Session()
        self.timeout = settings.PORTAL_PDK_TIMEOUT_SECONDS
        self.max_attempts = max(1, settings.PORTAL_PDK_MAX_ATTEMPTS)
        self.max_backoff = settings.PORTAL_PDK_MAX_BACKOFF_SECONDS
        # The key names the credentials, so changing them never reuses an old token.
        fingerprint = hashlib.sha256(
            f"{self.base}\0{connection.client_id}\0{connection.client_secret}".encode()
        ).hexdigest()[:24]
        self.token_key = f"pdk:token:{connection.pk}:{fingerprint}"

    # --- hooks ----------------------------------------------------------------------------------

    def hooks_path(self, hook_id: str | None = None) -> str:
        path = f"/api/ous/{self.connection.org_id}/hooks"
        return f"{path}/{hook_id}" if hook_id else path

    def list_hooks(self) -> list[dict[str, Any]]:
        hooks = self._api("GET", self.hooks_path(), during="listing hooks").json()
        if not isinstance(hooks, list):
            raise PdkError(200, "the hook list is not a JSON array", during="listing hooks")
        return [hook for hook in hooks if isinstance(hook, dict) and hook.get("id")]

    def get_hook(self, hook_id: str) -> dict[str, Any]:
        return self._api("GET", self.hooks_path(hook_id), during="reading a hook").json()

    def create_hook(self, body: dict[str, Any]) -> str:
        answer = self._api("POST", self.hooks_path(), json=body, during="creating a hook").json()
        if not isinstance(answer, dict) or not answer.get("id"):
            raise PdkError(201, "the answer to a create names no hook id", during="creating a hook")
        return str(answer["id"])

    def update_hook(self, hook_id: str, body: dict[str, Any]) -> None:
        self._api("PUT", self.hooks_path(hook_id), json=body, during="updating a hook")

    def delete_hook(self, hook_id: str) -> None:
        self._api("DELETE", self.hooks_path(hook_id), during="deleting a hook")

    # --- token ----------------------------------------------------------------------------------

    def token(self) -> str:
        """The cached id_token, or a new one; one worker fetches while the others wait for it."""
        token = cache.get(self.token_key)
        if token:
            return token
        lock_key, owner = self.token_key + ":lock", uuid.uuid4().hex
        if not cache.add(lock_key, owner, timeout=self.timeout + 5):
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                time.sleep(0.05)
                if token := cache.get(self.token_key):
                    return token
                if cache.add(lock_key, owner, timeout=self.timeout + 5):
                    break
        try:
            token, lifetime = self._fetch_token()
            cache.set(self.token_key, token, timeout=max(1, lifetime - TOKEN_MARGIN_SECONDS))
            return token
        finally:
            if cache.get(lock_key) == owner:
                cache.delete(lock_key)

    def forget_token(self, token: str) -> None:
        if cache.get(self.token_key) == token:
            cache.delete(self.token_key)

    def _fetch_token(self) -> tuple[str, int]:
        response = self._send(
            "POST",
            self.base + "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(self.connection.client_id, self.connection.client_secret),
            during="fetching a token",
        )
        try:
            answer = response.json()
            token, lifetime = answer["id_token"], int(answer.get("expires_in") or 300)
        except (ValueError, KeyError, TypeError):
            raise PdkError(
                response.status_code, "the token answer has no id_token", during="fetching a token"
            ) from None
        return token, lifetime

    # --- transport ------------------------------------------------------------------------------

    def _api(self, method: str, path: str, *, during: str, **kwargs) -> requests.Response:
        """An API call with the Bearer token; a 401 fetches a new token and tries once more."""
        token = self.token()
        response = self._send(method, self.base + path, token=token, during=during, accept_401=True, **kwargs)
        if response.status_code == 401:
            log.info("PDK refused the token for connection %s; fetching a new one", self.connection.pk)
            self.forget_token(token)
            token = self.token()
            response = self._send(method, self.base + path, token=token, during=during, **kwargs)
        return response

    def _send(
        self, method: str, url: str, *, during: str, token: str | None = None, accept_401=False, **kwargs
    ) -> requests.Response:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        for attempt in range(1, self.max_attempts + 1):
            last = attempt == self.max_attempts
            try:
                response = self.session.request(method, url, headers=headers, timeout=self.timeout, **kwargs)
            except (requests.Timeout, requests.ConnectionError) as exc:
                if last:
                    raise PdkError(None, _describe_exception(exc), during=during) from None
                self._sleep(self._backoff(attempt))
                continue
            status = response.status_code
            if status < 400 or (status == 401 and accept_401):
                return response
            if status == 429 and not last:
                self._sleep(self._rate_limit_wait(response, attempt))
                continue
            if status >= 500 and not last:
                self._sleep(self._backoff(attempt))
                continue
            raise PdkError(status, _message(response), during=during)
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, attempt: int) -> float:
        wait = BACKOFF_BASE_SECONDS * 2 ** (attempt - 1)
        return min(self.max_backoff, wait * random.uniform(0.8, 1.2))

    def _rate_limit_wait(self, response: requests.Response, attempt: int) -> float:
        """Retry-After (seconds or a date), else X-RateLimit-Reset (epoch seconds or seconds left)."""
        wait = _retry_after(response.headers.get("Retry-After"))
        if wait is None:
            wait = _reset(response.headers.get("X-RateLimit-Reset"))
        if wait is None:
            wait = self._backoff(attempt)
        # A little more each time, so workers that were all told the same moment do not return together.
        return min(self.max_backoff, max(0.0, wait) + self._backoff(attempt) / 4)

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - datetime.now(UTC)).total_seconds()


def _reset(value: str | None) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if number > 1e12:  # epoch milliseconds
        return number / 1000 - time.time()
    if number > 1e9:  # epoch seconds
        return number - time.time()
    return number  # seconds until the window resets


def _message(response: requests.Response) -> str:
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if isinstance(answer, dict):
        for key in ("message", "error_description", "error", "detail"):
            if isinstance(answer.get(key), str) and answer[key]:
                return answer[key][:500]
    return (response.text or response.reason or "no message").strip()[:500]


def _describe_exception(exc: Exception) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    return f"connection failed ({type(exc).__name__})"

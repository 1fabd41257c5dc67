"""Sign a payload file as its vendor would and POST it to a running portal (demos, local work)."""

import json
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from events import sources
from events.models import Endpoint


class Command(BaseCommand):
    help = "POST a vendor payload file to an endpoint of a running portal, signed with its secret."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, help="e.g. tests/fixtures/pdk/door.request.allowed.json")
        parser.add_argument("--endpoint", required=True, help="The endpoint's id (see webhook_endpoint list).")
        parser.add_argument("--url", default=None, help="Base URL of the portal (default: PORTAL_PUBLIC_URL).")

    def handle(self, *args, file: Path, endpoint: str, url: str | None, **options):
        try:
            target = Endpoint.objects.get(pk=endpoint)
        except (Endpoint.DoesNotExist, ValidationError):
            raise CommandError(f"No endpoint {endpoint!r}: see 'python manage.py webhook_endpoint list'.") from None
        try:
            body = file.read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror}") from None
        headers = {"Content-Type": "application/json", "User-Agent": "portal-send-fixture"}
        try:
            headers.update(sources.get(target.source).sign(target, body))
        except UnicodeDecodeError:
            raise CommandError(f"{file} is not UTF-8 text; vendors send JSON as UTF-8.") from None
        base = url or settings.PORTAL_PUBLIC_URL
        if not base.startswith(("http://", "https://")):
            origin = "--url" if url else "PORTAL_PUBLIC_URL"
            raise CommandError(f"{origin} must start with http:// or https:// (got {base!r}).")
        address = base.rstrip("/") + target.path
        # The scheme is checked above, so urllib can't be pointed at file: URLs.
        request = urllib.request.Request(address, data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
                status, answer = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, answer = exc.code, exc.read()
        except urllib.error.URLError as exc:
            raise CommandError(f"Cannot reach {address}: {exc.reason}") from None
        try:
            answer = json.dumps(json.loads(answer))
        except ValueError:
            answer = answer.decode("utf-8", "replace")[:500]
        self.stdout.write(f"POST {address} -> {status} {answer}")
        if status >= 300:
            raise CommandError(f"The portal answered {status}.")

"""Fill an empty portal with a demo building: endpoints per vendor and every documented sample."""

import secrets
from base64 import b64encode
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django.test import Client

from events import sources
from events.models import Endpoint, Event
from portal.models import Placement, Site

FIXTURES = settings.BASE_DIR / "tests" / "fixtures"
# Where the vendor samples say their devices are: placed in the demo building up front.
DEMO_PLACEMENTS = [
    (Placement.Kind.PDK_PANEL, "1070000", "Demo panel"),
    (Placement.Kind.SPK_PARTNER, "acme-corp", "Acme Corp"),
    (Placement.Kind.SEAM_ACCOUNT, "00000000-0000-0000-0000-000000000000", "Demo Seam account"),
]


class Command(BaseCommand):
    help = "Create a demo site, one endpoint per vendor, and post every vendor sample through the ingress."

    def add_arguments(self, parser):
        parser.add_argument("--if-empty", action="store_true", help="Do nothing when events already exist.")

    def handle(self, *args, if_empty=False, **options):
        if if_empty and Event.objects.exists():
            self.stdout.write("Events already exist; no demo data loaded.")
            return
        site, _ = Site.objects.get_or_create(name="Demo building", defaults={"timezone": "Europe/Paris"})
        for kind, external_id, name in DEMO_PLACEMENTS:
            Placement.objects.update_or_create(
                kind=kind, external_id=external_id, defaults={"name": name, "site": site}
            )
        endpoints = {
            "pdk": {"secret": secrets.token_urlsafe(24)},
            "spk": {"secret": secrets.token_urlsafe(24), "partner_id": "acme-corp"},
            "seam": {"secret": "whsec_" + b64encode(secrets.token_bytes(24)).decode()},
        }
        client = Client(HTTP_HOST=settings.ALLOWED_HOSTS[0] if settings.ALLOWED_HOSTS else "127.0.0.1")
        for source, verification in endpoints.items():
            endpoint = Endpoint.objects.create(source=source, name=f"Demo {source.upper()}", site=site, **verification)
            accepted = sum(self._post(client, endpoint, path) for path in sorted((FIXTURES / source).glob("*.json")))
            self.stdout.write(f"{endpoint.name}: {accepted} samples accepted at {endpoint.path}")
        self.stdout.write("The worker processes them in a moment: open the admin to see locks, activity and alarms.")

    def _post(self, client: Client, endpoint: Endpoint, path: Path) -> bool:
        body = path.read_bytes()
        headers = sources.get(endpoint.source).sign(endpoint, body)
        response = client.post(endpoint.path, body, content_type="application/json", headers=headers)
        if response.status_code != 200:
            self.stderr.write(f"{path.name}: {response.status_code} {response.content[:200]!r}")
        return response.status_code == 200

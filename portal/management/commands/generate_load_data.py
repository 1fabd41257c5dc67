"""Fill the database with a large portfolio's worth of data, to measure the admin at scale.

    python manage.py generate_load_data                      # 1,000,000 events, 10,000 locks, ...
    python manage.py generate_load_data --events 2000 --locks 50 --residents 100 --seed 3

What it makes (every count can be scaled):

- sites, and per site its placements: PDK panels (4 doors each) and organization, SPK hubs and
  partner org, a Seam connected account; one webhook endpoint per vendor;
- locks (half PDK doors, 30 % Seam devices, 20 % SPK locks), with live state, a few removed;
  cameras (SPK) and intercoms (PDK);
- residents of each vendor, their access grants to locks of their site, and credentials (cards,
  PINs, access codes, key slots, physical/wallet/temp keys, licence plates), some revoked;
- events over the last 30 days, their payloads made from the vendor samples in tests/fixtures with
  fresh ids, the locks' ids and the event's time; mostly processed, some failed, unhandled or
  (in the last hours) pending. Some locks are much busier than others;
- one activity row per door request, lock/unlock or door position event (the --activity count);
- alarms (about 15 % open), each with its raising events as occurrences and, when cleared, the
  clearing event; deliveries for the most recent events, and a few rejected requests.

Rows go in with PostgreSQL's COPY (ids assigned here, sequences moved past them), in one
transaction, then the tables are analyzed. Deterministic for a given --seed and --until (the end of
the 30 days; the current hour by default). Refuses to add to a database that already has events
unless --append is given.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, models, transaction
from django.utils import timezone

from events.models import Delivery, Endpoint, Event, RejectedRequest
from events.sources.base import bounded_key, canonical_sha256
from portal.models import (
    AccessGrant,
    Activity,
    Alarm,
    AlarmOccurrence,
    Camera,
    Credential,
    Intercom,
    Lock,
    Placement,
    Resident,
    Site,
)

FIXTURES = Path(settings.BASE_DIR) / "tests" / "fixtures"
DAYS = 30

COUNTS = {  # option -> default
    "sites": 20,
    "locks": 10_000,
    "residents": 50_000,
    "grants": 100_000,
    "credentials": 50_000,
    "events": 1_000_000,
    "activity": 200_000,
    "alarms": 3_000,
    "cameras": 500,
    "intercoms": 200,
    "deliveries": 50_000,
    "rejected": 1_000,
}

VENDOR_SHARE = {"pdk": 0.5, "seam": 0.3, "spk": 0.2}  # of locks, residents and events

# Events that make an activity row: fixture -> (action, result, method, weight within the vendor).
ACTIVITY = {
    "pdk": {
        "door.request.allowed": ("request", "allowed", "CARD_OR_PIN", 55),
        "door.request.denied": ("request", "denied", "CARD_OR_PIN", 8),
        "door.input.dps.opened": ("door opened", "", "", 15),
        "door.input.dps.closed": ("door closed", "", "", 15),
        "door.input.relay.on": ("unlock", "", "relay", 4),
        "door.input.relay.off": ("lock", "", "relay", 3),
    },
    "seam": {
        "lock.unlocked": ("unlock", "", "keycode", 45),
        "lock.locked": ("lock", "", "manual", 45),
        "lock.access_denied": ("access denied", "denied", "keycode", 10),
    },
    "spk": {
        "LockOpenRequested": ("open requested", "", "remote_unlock", 80),
        "TempKeyUsed": ("temp key used", "allowed", "temp key", 20),
    },
}

# Alarm kinds: (vendor, kind, raising fixture, clearing fixture, subject format, on the lock?)
ALARMS = [
    ("pdk", "door_forced", "door.alarm.forced", "door.alarm.forced.cleared", "pdk:door:{ext}", True),
    ("pdk", "door_propped", "door.alarm.propped.on", "door.alarm.propped.off", "pdk:door:{ext}", True),
    ("seam", "device_offline", "device.disconnected", "device.connected", "seam:device:{ext}", True),
    ("seam", "low_battery", "device.low_battery", "device.battery_status_changed", "seam:device:{ext}", True),
    ("spk", "smoke", "AlarmTriggered", "AlarmCleared", "spk:device:sensor-{n}:smoke", False),
]
SEVERITY = {
    "door_forced": "critical",
    "door_propped": "major",
    "device_offline": "major",
    "low_battery": "minor",
    "smoke": "critical",
}

# Everyday events that are neither activity nor alarms weigh more than the rare ones.
COMMON = {
    "door.input.rex.on": 20,
    "door.input.rex.off": 20,
    "panel.connected": 3,
    "panel.disconnected": 3,
    "device.battery_status_changed": 20,
    "device.connected": 8,
    "device.disconnected": 8,
    "access_code.set_on_device": 10,
    "access_code.created": 10,
    "ShadowUpdate": 20,
    "KeyAdded": 8,
    "KeyRemoved": 4,
}
FAILURES = [
    "KeyError: 'doorId'",
    "ValueError: panelId is not a number",
    "OperationalError: canceling statement due to statement timeout",
    "ValidationError: detail.data.uuid is required",
]

STREETS = [
    "Harbour",
    "Linden",
    "Maple",
    "Riverside",
    "Station",
    "Mill",
    "Park",
    "Cedar",
    "Elm",
    "Quay",
    "Market",
    "Orchard",
    "Chapel",
    "Kingsway",
    "Meadow",
    "Hillcrest",
]
AREAS = ["Lobby", "Floor", "Garage", "Stair", "Roof", "Bike room", "Mail room", "Gym", "Unit", "Service"]
FIRST = [
    "Ada",
    "Ben",
    "Chloe",
    "Dev",
    "Emma",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jonas",
    "Kira",
    "Liam",
    "Mara",
    "Noah",
    "Olga",
    "Pavel",
    "Quinn",
    "Rosa",
    "Sami",
    "Tara",
]
LAST = [
    "Adler",
    "Brandt",
    "Costa",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Horvat",
    "Ivanova",
    "Jensen",
    "Kowalski",
    "Lund",
    "Moreau",
    "Novak",
]


class Command(BaseCommand):
    help = "Fill the database with load-test data: 1,000,000 events, 10,000 locks, 50,000 residents, ..."

    def add_arguments(self, parser):
        for name, default in COUNTS.items():
            parser.add_argument(f"--{name}", type=int, default=default, help=f"how many (default {default:,})")
        parser.add_argument("--seed", type=int, default=1, help="the same seed makes the same data (default 1)")
        parser.add_argument(
            "--until",
            type=dt.datetime.fromisoformat,
            help="end of the 30 days of events, ISO time (default: the current hour); fix it to repeat a run exactly",
        )
        parser.add_argument("--append", action="store_true", help="add to a database that already has events")
        parser.add_argument("--no-analyze", action="store_true", help="skip VACUUM ANALYZE of the filled tables")

    def handle(self, *args, **options):
        if connection.vendor != "postgresql":
            raise CommandError("generate_load_data needs PostgreSQL (it loads rows with COPY).")
        if not options["append"] and Event.objects.exists():
            raise CommandError("This database already has events; pass --append to add load data to them.")
        counts = {name: options[name] for name in COUNTS}
        for name, value in counts.items():
            if value < 0:
                raise CommandError(f"--{name} cannot be negative.")
        if counts["sites"] < 1 or counts["locks"] < 1:
            raise CommandError("At least one site and one lock are needed.")
        if counts["activity"] > counts["events"]:
            raise CommandError("--activity cannot exceed --events (each activity row comes from an event).")
        until = options["until"] or timezone.now().replace(minute=0, second=0, microsecond=0)
        if timezone.is_naive(until):
            until = until.replace(tzinfo=dt.UTC)
        started = time.perf_counter()
        generator = LoadGenerator(counts, options["seed"], until, self._say)
        with transaction.atomic():
            made = generator.run()
        self._say(f"committed in {time.perf_counter() - started:.0f} s")
        if not options["no_analyze"]:
            tables = [model._meta.db_table for model in made]
            with connection.cursor() as cursor:
                cursor.execute(f"VACUUM (ANALYZE) {', '.join(tables)}")
            self._say(f"vacuumed and analyzed in {time.perf_counter() - started:.0f} s")
        width = max(len(model._meta.verbose_name_plural) for model in made)
        self.stdout.write(f"Made, in {time.perf_counter() - started:.0f} s (seed {options['seed']}, until {until}):")
        for model, number in made.items():
            self.stdout.write(f"  {model._meta.verbose_name_plural:<{width}} {number:>10,}")

    def _say(self, message: str) -> None:
        if self.verbosity >= 1:
            self.stderr.write(f"  {message}")

    def execute(self, *args, **options):
        self.verbosity = options.get("verbosity", 1)
        return super().execute(*args, **options)


class Table:
    """COPY into a model's table: the given fields per row, the model's defaults for the others."""

    def __init__(self, model: type[models.Model], fields: list[str]):
        self.model = model
        concrete = {f.name: f for f in model._meta.concrete_fields}
        now = timezone.now()
        rest, defaults = [], []
        for field in model._meta.concrete_fields:
            if field.name in fields or (field.primary_key and isinstance(field, models.AutoField)):
                continue  # given, or numbered by the database
            rest.append(field)
            if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
                defaults.append(now)
            elif field.has_default() or (field.empty_strings_allowed and not field.null):  # "" for text
                value = field.get_default()
                defaults.append(json.dumps(value) if isinstance(field, models.JSONField) else value)
            elif field.null:
                defaults.append(None)
            else:
                raise CommandError(f"{model.__name__}.{field.name} needs a value and has no default.")
        columns = [concrete[name].column for name in fields] + [f.column for f in rest]
        self.defaults = tuple(defaults)
        quoted = ", ".join(connection.ops.quote_name(column) for column in columns)
        self.sql = f"COPY {connection.ops.quote_name(model._meta.db_table)} ({quoted}) FROM STDIN"

    def copy(self, rows) -> int:
        count = 0
        defaults = self.defaults
        with connection.cursor() as cursor, cursor.cursor.copy(self.sql) as copy:
            for row in rows:
                copy.write_row(row + defaults)
                count += 1
        return count


def next_id(model: type[models.Model]) -> int:
    return (model.objects.aggregate(top=models.Max("pk"))["top"] or 0) + 1


def move_sequence(model: type[models.Model]) -> None:
    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence(%s, 'id'), (SELECT COALESCE(MAX(id), 1) FROM \"{table}\"))",  # noqa: S608 (a model's table)
            [table],
        )


def iso(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


class LoadGenerator:
    def __init__(self, counts: dict[str, int], seed: int, until: dt.datetime, say):
        self.n = counts
        self.rng = random.Random(seed)
        self.until = until
        self.start = until - dt.timedelta(days=DAYS)
        self.say = say
        self.made: dict[type[models.Model], int] = {}
        self.templates = {
            vendor: {path.stem: path.read_text() for path in sorted((FIXTURES / vendor).glob("*.json"))}
            for vendor in VENDOR_SHARE
        }

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def moment(self, days: float = DAYS) -> dt.datetime:
        return self.until - dt.timedelta(seconds=self.rng.random() * days * 86400)

    def copy(self, model, fields, rows) -> None:
        began = time.perf_counter()
        count = Table(model, fields).copy(rows)
        if count and isinstance(model._meta.pk, models.AutoField):
            move_sequence(model)
        self.made[model] = self.made.get(model, 0) + count
        self.say(f"{model._meta.verbose_name_plural}: {count:,} in {time.perf_counter() - began:.1f} s")

    def run(self) -> dict[type[models.Model], int]:
        self.make_sites()
        self.make_locks()
        self.make_equipment()
        self.make_residents()
        self.make_grants_and_credentials()
        self.make_events()
        return self.made

    # Sites, placements, endpoints ---------------------------------------------------------------

    def make_sites(self):
        rng = self.rng
        taken = set(Site.objects.values_list("name", flat=True))
        first = next_id(Site)
        self.sites = []
        rows = []
        for k in range(self.n["sites"]):
            name = f"{rng.randrange(1, 200)} {rng.choice(STREETS)} Street"
            while name in taken:
                name = f"{rng.randrange(1, 2000)} {rng.choice(STREETS)} Street"
            taken.add(name)
            self.sites.append(first + k)
            rows.append((first + k, name, rng.choice(["Europe/Paris", "Europe/London", "UTC", "America/New_York"])))
        self.copy(Site, ["id", "name", "timezone"], rows)
        self.site_weights = [rng.uniform(0.3, 2.0) for _ in self.sites]

        self.endpoints = {}
        rows = []
        for site in self.sites:
            for vendor in VENDOR_SHARE:
                pk = uuid.UUID(int=rng.getrandbits(128), version=4)
                self.endpoints[(site, vendor)] = pk
                secret = "whsec_" + hashlib.sha256(pk.bytes).hexdigest()[:32] if vendor == "seam" else pk.hex
                rows.append((pk, vendor, f"{vendor.upper()} site {site}", site, secret))
        self.copy(Endpoint, ["id", "source", "name", "site", "secret"], rows)

    # Locks and the placements they belong to ----------------------------------------------------

    def make_locks(self):
        rng = self.rng
        vendors = list(VENDOR_SHARE)
        per_site = {site: {v: 0 for v in vendors} for site in self.sites}
        for _ in range(self.n["locks"]):
            site = rng.choices(self.sites, self.site_weights)[0]
            per_site[site][rng.choices(vendors, list(VENDOR_SHARE.values()))[0]] += 1

        placement_id = next_id(Placement)
        lock_id = next_id(Lock)
        placements, locks = [], []
        self.locks = {v: [] for v in vendors}  # vendor -> [(id, external_id, site, placement, placement external id)]
        self.panels, self.hubs = [], []
        self.accounts = {}  # site -> seam connected account external id
        now = self.until

        def placement(kind, external_id, name, site):
            nonlocal placement_id
            placement_id += 1
            seen = self.moment(90)
            placements.append((placement_id, kind, external_id, name, site, True, seen, "", None))
            return placement_id

        def lock(vendor, external_id, name, site, place, place_ext):
            nonlocal lock_id
            lock_id += 1
            battery = None if vendor == "pdk" else round(rng.uniform(0.05, 1.0), 2)
            locks.append(
                (
                    lock_id,
                    vendor,
                    external_id,
                    name,
                    place,
                    site,
                    rng.random() < 0.9,
                    self.moment(3),
                    rng.random() < 0.05 if vendor == "pdk" else None,
                    self.moment(3) if vendor == "pdk" else None,
                    rng.random() < 0.97,
                    self.moment(3),
                    battery,
                    "" if battery is None else ("low" if battery < 0.2 else "good"),
                    None if battery is None else self.moment(3),
                    now - dt.timedelta(days=rng.uniform(0, 365)) if rng.random() < 0.01 else None,
                )
            )
            self.locks[vendor].append((lock_id, external_id, site, place, place_ext))

        placement_id -= 1
        lock_id -= 1
        for site in self.sites:
            counts = per_site[site]
            placement(Placement.Kind.PDK_ORG, f"org-{site}-{self.uuid()[:8]}", f"PDK org of site {site}", site)
            doors = counts["pdk"]
            while doors > 0:
                panel_ext = str(2_000_000 + placement_id + 1)
                panel = placement(Placement.Kind.PDK_PANEL, panel_ext, f"Panel {panel_ext}", site)
                self.panels.append((panel, panel_ext, site))
                for door in range(1, min(4, doors) + 1):
                    name = f"{rng.choice(AREAS)} {rng.randrange(1, 40)} door {door}"
                    lock("pdk", f"{panel_ext}:{door}", name, site, panel, panel_ext)
                doors -= 4
            account = self.uuid()
            self.accounts[site] = account
            seam_account = placement(Placement.Kind.SEAM_ACCOUNT, account, f"Seam account of site {site}", site)
            for _ in range(counts["seam"]):
                lock("seam", self.uuid(), f"{rng.choice(AREAS)} {rng.randrange(1, 300)}", site, seam_account, account)
            placement(Placement.Kind.SPK_PARTNER, f"partner-{site}-{self.uuid()[:8]}", f"Partner {site}", site)
            remaining = counts["spk"]
            while remaining > 0:
                hub_ext = self.uuid()
                hub = placement(Placement.Kind.SPK_HUB, hub_ext, f"Hub {hub_ext[:8]}", site)
                self.hubs.append((hub, hub_ext, site))
                for _ in range(min(10, remaining)):
                    lock("spk", self.uuid(), f"{rng.choice(AREAS)} {rng.randrange(1, 300)}", site, hub, hub_ext)
                remaining -= 10

        self.copy(
            Placement,
            ["id", "kind", "external_id", "name", "site", "online", "online_as_of", "status", "status_as_of"],
            placements,
        )
        self.copy(
            Lock,
            [
                "id",
                "vendor",
                "external_id",
                "name",
                "placement",
                "site",
                "locked",
                "locked_as_of",
                "door_open",
                "door_open_as_of",
                "online",
                "online_as_of",
                "battery_level",
                "battery_status",
                "battery_as_of",
                "removed_at",
            ],
            locks,
        )
        self.site_locks: dict[tuple[int, str], list] = {}
        self.any_site_locks: dict[int, list] = {}
        for vendor, found in self.locks.items():
            for row in found:
                self.site_locks.setdefault((row[2], vendor), []).append(row)
                self.any_site_locks.setdefault(row[2], []).append(row)

    def make_equipment(self):
        rng = self.rng
        spk_locks = self.locks["spk"]
        rows = []
        for k in range(self.n["cameras"] if self.hubs else 0):
            hub, _, site = rng.choice(self.hubs)
            linked = rng.choice(spk_locks)[0] if spk_locks and rng.random() < 0.6 else None
            rows.append(("spk", self.uuid(), f"Camera {k + 1}", hub, site, "registered", self.moment(), linked))
        fields = ["vendor", "external_id", "name", "placement", "site", "status", "status_as_of", "lock"]
        self.copy(Camera, fields, rows)
        rows = []
        for k in range(self.n["intercoms"] if self.panels else 0):
            panel, panel_ext, site = rng.choice(self.panels)
            rows.append(("pdk", f"{panel_ext}:ic{k}", f"Intercom {k + 1}", panel, site, "online", self.moment(), "2N"))
        fields = ["vendor", "external_id", "name", "placement", "site", "status", "status_as_of", "manufacturer"]
        self.copy(Intercom, fields, rows)

    # People, their access and keys --------------------------------------------------------------

    def make_residents(self):
        rng = self.rng
        first_id = next_id(Resident)
        self.residents = {}  # (site, vendor) -> [(id, external id)]
        self.resident_rows = []  # (id, vendor, site)
        rows = []
        for k in range(self.n["residents"]):
            pk = first_id + k
            vendor = rng.choices(list(VENDOR_SHARE), list(VENDOR_SHARE.values()))[0]
            site = rng.choices(self.sites, self.site_weights)[0]
            external = str(pk) if vendor == "pdk" else self.uuid()
            first, last = rng.choice(FIRST), rng.choice(LAST)
            status = rng.choices(["active", "suspended", "deleted"], [92, 5, 3])[0]
            rows.append(
                (
                    pk,
                    vendor,
                    external,
                    f"{first} {last}",
                    f"{first.lower()}.{last.lower()}{pk}@example.com",
                    f"+33 6 {rng.randrange(10**8):08d}",
                    site,
                    status,
                    self.moment(365),
                    self.moment(365) if vendor == "pdk" else None,
                    self.until + dt.timedelta(days=rng.randrange(30, 900)) if rng.random() < 0.3 else None,
                )
            )
            self.residents.setdefault((site, vendor), []).append((pk, external))
            self.resident_rows.append((pk, vendor, site))
        fields = ["id", "vendor", "external_id", "name", "email", "phone", "site", "status", "status_as_of"]
        self.copy(Resident, [*fields, "active_from", "expires_at"], rows)

    def make_grants_and_credentials(self):
        rng = self.rng
        rows, seen = [], set()
        attempts = 0
        while len(rows) < self.n["grants"] and self.resident_rows and attempts < self.n["grants"] * 3:
            attempts += 1
            resident, vendor, site = rng.choice(self.resident_rows)
            choices = self.site_locks.get((site, vendor)) or self.any_site_locks.get(site)
            if not choices:
                continue  # a site without locks: nothing to grant there
            lock = rng.choice(choices)[0]
            if (resident, lock) in seen:
                continue
            seen.add((resident, lock))
            granted = self.moment(365)
            revoked = granted + dt.timedelta(days=rng.uniform(1, 200)) if rng.random() < 0.1 else None
            level = rng.choices(["OWNER", "ADMIN", "USER", "GUEST"], [2, 3, 85, 10])[0]
            rows.append((resident, lock, level, rng.choice(["", "manager@example.com", "api"]), granted, revoked))
        self.copy(AccessGrant, ["resident", "lock", "level", "granted_by", "granted_at", "revoked_at"], rows)

        kinds = {
            "pdk": ["card", "card", "pin"],
            "seam": ["access_code"],
            "spk": ["key_slot", "key_slot", "physical_key", "wallet_key", "temp_key", "license_plate"],
        }
        on_lock = {"access_code", "key_slot", "temp_key"}
        rows = []
        for k in range(self.n["credentials"] if self.resident_rows else 0):
            resident, vendor, site = rng.choice(self.resident_rows)
            kind = rng.choice(kinds[vendor])
            site_locks = self.site_locks.get((site, vendor))
            lock = rng.choice(site_locks)[0] if kind in on_lock and site_locks else None
            issued = self.moment(365)
            removed = issued + dt.timedelta(days=rng.uniform(1, 200)) if rng.random() < 0.1 else None
            label = f"{kind.replace('_', ' ')} {k + 1}" if kind != "license_plate" else f"AB-{k:05d}-CD"
            status = rng.choice(["set on device", "issued", "prepared"])
            valid_until = issued + dt.timedelta(days=7) if kind == "temp_key" else None
            rows.append(
                (vendor, kind, self.uuid(), label, resident, lock, status, issued, valid_until, issued, removed)
            )
        fields = ["vendor", "kind", "external_id", "label", "resident", "lock", "status", "status_as_of"]
        self.copy(Credential, [*fields, "valid_until", "issued_at", "removed_at"], rows)

    # Events, and what came of them --------------------------------------------------------------

    def pick_lock(self, vendor: str):
        """Busy doors and quiet ones: a skewed choice, the first locks of each vendor the busiest."""
        found = self.locks[vendor]
        return found[int(len(found) * self.rng.random() ** 3)]

    def payload(self, vendor: str, name: str, lock, at: dt.datetime, person: str | None):
        """A vendor sample with a fresh id, this lock's ids and this time: (payload json, dedup key, type)."""
        payload = json.loads(self.templates[vendor][name])
        event_id = self.uuid()
        if vendor == "pdk":
            payload["id"] = event_id
            occurred = int(at.timestamp() * 1000)
            if "panelId" in payload:
                payload["panelId"] = lock[4]
                body = payload.get("body")
                if isinstance(body, dict):
                    if "doorId" in body:
                        body["doorId"] = int(lock[1].rsplit(":", 1)[1])
                    if "personId" in body and person is not None:
                        body["personId"] = int(person)
                metadata = payload.setdefault("metadata", {})
                if isinstance(metadata, dict):
                    metadata["occurred"] = occurred
            else:
                payload["timestamp"] = iso(at)
            # As the ingress identifies them: panel events by topic, panel, id and time; the others by digest.
            if "body" in payload:
                dedup = bounded_key(f"{payload.get('topic')}:{payload.get('panelId', '')}:{event_id}:{occurred}")
            else:
                dedup = canonical_sha256(payload)
            event_type = payload.get("topic", name)
        elif vendor == "seam":
            payload["event_id"] = dedup = event_id
            for field, value in (("device_id", lock[1]), ("connected_account_id", lock[4])):
                if field in payload:
                    payload[field] = value
            if person is not None and "acs_user_id" in payload:
                payload["acs_user_id"] = person
            payload["occurred_at"] = payload["created_at"] = iso(at)
            event_type = payload.get("event_type", name)
        else:
            payload["id"] = dedup = event_id
            payload["time"] = iso(at)
            detail = payload.get("detail") or {}
            data = detail.get("data") or {}
            for field in ("uuid", "lockUuid"):
                if field in data:
                    data[field] = lock[1]
            if detail.get("aggregateType") == "lock":
                detail["aggregateId"] = lock[1]
            if "timestamp" in detail:
                detail["timestamp"] = int(at.timestamp() * 1000)
            if "timestamp" in data:
                data["timestamp"] = iso(at) if isinstance(data["timestamp"], str) else int(at.timestamp() * 1000)
            if person is not None and "userUuid" in data:
                data["userUuid"] = person
            event_type = payload.get("detail-type", name)
        return json.dumps(payload, separators=(",", ":")), dedup, event_type

    def make_events(self):
        rng = self.rng
        n = self.n["events"]
        vendors = [v for v in VENDOR_SHARE if self.locks[v]]
        weights = [VENDOR_SHARE[v] for v in vendors]
        activity_kinds = {v: list(ACTIVITY[v].items()) for v in vendors}
        alarm_names = {name for row in ALARMS for name in row[2:4]}
        other = {}
        for vendor in vendors:
            names = [k for k in self.templates[vendor] if k not in ACTIVITY[vendor] and k not in alarm_names] or list(
                self.templates[vendor]
            )
            other[vendor] = (names, [COMMON.get(k, 1) for k in names])

        # Which event slots are activity, and which raise or clear which alarm.
        alarms = self.plan_alarms(vendors)
        alarm_events = sum(len(a["slots"]) for a in alarms)
        if self.n["activity"] + alarm_events > n:
            raise CommandError(
                f"{n} events cannot carry {self.n['activity']} activity rows and {alarm_events} alarm events."
            )
        special = rng.sample(range(n), self.n["activity"] + alarm_events)
        role: dict[int, tuple] = {index: ("activity",) for index in special[: self.n["activity"]]}
        pool = iter(special[self.n["activity"] :])
        for number, alarm in enumerate(alarms):
            slots = sorted(next(pool) for _ in alarm["slots"])
            for slot, what in zip(slots, alarm["slots"], strict=True):
                role[slot] = ("alarm", number, what)

        first_event = next_id(Event)
        first_activity = next_id(Activity)
        step = (self.until - self.start) / max(n, 1)
        pending_after = self.until - dt.timedelta(hours=6)
        activity_rows = []
        deliveries = []
        deliveries_from = n - self.n["deliveries"]
        resident_people = self.residents

        def events():
            for index in range(n):
                received = self.start + step * (index + rng.random())
                at = received - dt.timedelta(milliseconds=rng.randrange(100, 3000))
                at = at.replace(microsecond=at.microsecond // 1000 * 1000)  # vendors send milliseconds
                pk = first_event + index
                status, attempts, error, processed = "processed", 1, "", received + dt.timedelta(milliseconds=300)
                person = None
                job = role.get(index)
                if job is None:
                    vendor = rng.choices(vendors, weights)[0]
                    lock = self.pick_lock(vendor)
                    names, name_weights = other[vendor]
                    name = rng.choices(names, name_weights)[0]
                    draw = rng.random()
                    if draw < 0.02:
                        status, attempts, error = "failed", 3, rng.choice(FAILURES)
                    elif draw < 0.05:
                        status, attempts, error = "unhandled", 1, ""
                    elif draw < 0.06 and received > pending_after:
                        status, attempts, processed = "pending", 0, None
                elif job[0] == "activity":
                    vendor = rng.choices(vendors, weights)[0]
                    lock = self.pick_lock(vendor)
                    kinds = activity_kinds[vendor]
                    name, (action, result, method, _) = rng.choices(kinds, [k[1][3] for k in kinds])[0]
                    resident = None
                    people = resident_people.get((lock[2], vendor))
                    if people and rng.random() < 0.7:
                        resident, person = rng.choice(people)
                    actor = f"person {person}" if person and vendor == "pdk" else ""
                    activity_rows.append(
                        (first_activity + len(activity_rows), pk, at, lock[0], lock[2], resident)
                        + (action, result, method, actor)
                    )
                else:
                    alarm = alarms[job[1]]
                    vendor, lock = alarm["vendor"], alarm["lock"]
                    name = alarm["raise"] if job[2] == "raise" else alarm["clear"]
                    alarm["events"].append((job[2], pk, at))
                body, dedup, event_type = self.payload(vendor, name, lock, at, person)
                endpoint = self.endpoints[(lock[2], vendor)]
                if index >= deliveries_from:
                    headers = json.dumps({"Content-Type": "application/json", "User-Agent": f"{vendor}-webhooks/1.0"})
                    deliveries.append((endpoint, pk, received, headers, body.encode(), "203.0.113.7", False))
                enqueued = received if status == "pending" else None
                message = "msg_" + self.uuid().replace("-", "")[:26] if vendor == "seam" else ""  # svix-id
                yield (pk, vendor, event_type, dedup, message, at, received, endpoint, body) + (
                    status,
                    attempts,
                    error,
                    processed,
                    enqueued,
                )

        fields = ["id", "source", "event_type", "dedup_key", "message_id", "occurred_at", "received_at", "endpoint"]
        fields += ["payload"]
        fields += ["status", "attempts", "last_error", "processed_at", "enqueued_at"]
        self.copy(Event, fields, events())
        fields = ["id", "event", "occurred_at", "lock", "site", "resident", "action", "result", "method", "actor"]
        self.copy(Activity, fields, activity_rows)
        self.finish_alarms(alarms)
        fields = ["endpoint", "event", "received_at", "headers", "body", "remote_addr", "duplicate"]
        self.copy(Delivery, fields, deliveries)
        rejected = []
        endpoints = list(self.endpoints.values())
        for _ in range(self.n["rejected"]):
            code, reason = rng.choice([(401, "bad signature"), (400, "body is not JSON"), (401, "stale timestamp")])
            rejected.append((rng.choice(endpoints), self.moment(), code, reason, "198.51.100.9", "{}"))
        fields = ["endpoint", "received_at", "status_code", "reason", "remote_addr", "headers"]
        self.copy(RejectedRequest, fields, rejected)
        with connection.cursor() as cursor:  # each lock's last activity, as the handlers keep it
            cursor.execute(
                f'UPDATE "{Lock._meta.db_table}" AS l SET last_activity_at = a.last'  # noqa: S608 (model tables)
                f' FROM (SELECT lock_id, MAX(occurred_at) AS last FROM "{Activity._meta.db_table}"'
                "       WHERE id >= %s GROUP BY lock_id) AS a"
                " WHERE l.id = a.lock_id",
                [first_activity],
            )

    def plan_alarms(self, vendors: list[str]) -> list[dict]:
        rng = self.rng
        kinds = [row for row in ALARMS if row[0] in vendors]
        open_subjects = set(
            Alarm.objects.filter(state__in=Alarm.OPEN_STATES).values_list("kind", "subject")
        )  # with --append
        alarms = []
        for _ in range(self.n["alarms"] if kinds else 0):
            vendor, kind, raising, clearing, subject, on_lock = rng.choice(kinds)
            lock = self.pick_lock(vendor)
            subject = subject.format(ext=lock[1], n=rng.randrange(100_000))
            state = rng.choices(["active", "acknowledged", "cleared", "resolved"], [10, 5, 80, 5])[0]
            if state in ("active", "acknowledged"):
                if (kind, subject) in open_subjects:
                    state = "cleared"
                else:
                    open_subjects.add((kind, subject))
            occurrences = rng.choices([1, 2, 3, 5], [70, 15, 10, 5])[0]
            slots = ["raise"] * occurrences + (["clear"] if state == "cleared" else [])
            alarms.append(
                {
                    "vendor": vendor,
                    "kind": kind,
                    "raise": raising,
                    "clear": clearing,
                    "subject": subject,
                    "lock": lock,
                    "on_lock": on_lock,
                    "state": state,
                    "slots": slots,
                    "events": [],
                }
            )
        return alarms

    def finish_alarms(self, alarms: list[dict]) -> None:
        first = next_id(Alarm)
        rows, occurrences = [], []
        for number, alarm in enumerate(alarms):
            pk = first + number
            raised = [(event, at) for what, event, at in alarm["events"] if what == "raise"]
            cleared = [(event, at) for what, event, at in alarm["events"] if what == "clear"]
            lock = alarm["lock"]
            state = alarm["state"]
            people_at = raised[-1][1] + dt.timedelta(minutes=self.rng.randrange(2, 240))
            rows.append(
                (
                    pk,
                    alarm["kind"],
                    SEVERITY[alarm["kind"]],
                    alarm["subject"],
                    lock[0] if alarm["on_lock"] else None,
                    lock[2],
                    state,
                    raised[0][1],
                    raised[-1][1],
                    cleared[0][1] if cleared else None,
                    len(raised),
                    raised[0][0],
                    cleared[0][0] if cleared else None,
                    people_at if state in ("acknowledged", "resolved") else None,
                    people_at if state == "resolved" else None,
                    "Checked on site." if state in ("acknowledged", "resolved") else "",
                )
            )
            occurrences += [(pk, event, at) for event, at in raised]
        fields = ["id", "kind", "severity", "subject", "lock", "site", "state", "raised_at", "last_raised_at"]
        fields += ["cleared_at", "occurrences", "raised_by", "cleared_by", "acknowledged_at", "resolved_at", "note"]
        self.copy(Alarm, fields, rows)
        self.copy(AlarmOccurrence, ["alarm", "event", "occurred_at"], occurrences)

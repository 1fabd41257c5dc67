"""Sites from the command line: create one, and place vendor panels, hubs and accounts in it."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from portal import domain
from portal.errors import describe
from portal.models import Placement, Site

# --option -> the kind of placement it names
PLACEMENT_OPTIONS = {
    "pdk_panel": Placement.Kind.PDK_PANEL,
    "pdk_org": Placement.Kind.PDK_ORG,
    "spk_hub": Placement.Kind.SPK_HUB,
    "spk_partner": Placement.Kind.SPK_PARTNER,
    "seam_workspace": Placement.Kind.SEAM_WORKSPACE,
    "seam_account": Placement.Kind.SEAM_ACCOUNT,
}


class Command(BaseCommand):
    help = "Manage sites: 'add' a site, 'assign' a vendor panel, hub, organization or account to one, 'list' them."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        add = actions.add_parser("add", help="Create a site (a building).")
        add.add_argument("name")
        add.add_argument("--timezone", default="UTC", help="IANA name, e.g. Europe/Paris (default UTC).")
        assign = actions.add_parser(
            "assign", help="Place what a vendor reports in a site; what already arrived from it moves too."
        )
        assign.add_argument("name", help="The site's name.")
        which = assign.add_mutually_exclusive_group(required=True)
        for option, kind in PLACEMENT_OPTIONS.items():
            which.add_argument(f"--{option.replace('_', '-')}", dest=option, metavar="ID", help=kind.label)
        actions.add_parser("list", help="List sites with what is placed in them.")

    def handle(self, *args, action, **options):
        return getattr(self, action)(**options)

    def add(self, *, name, timezone, **_):
        site = Site(name=name.strip(), timezone=timezone)
        try:
            site.full_clean()
        except ValidationError as exc:
            raise CommandError(describe(exc)) from None
        site.save()
        self.stdout.write(f"Created site {site.name!r} ({site.timezone})")

    def assign(self, *, name, **options):
        site = Site.objects.filter(name=name).first()
        if site is None:
            raise CommandError(f"No site named {name!r}; create it with: manage.py site add {name!r}")
        option, external_id = next((o, options[o]) for o in PLACEMENT_OPTIONS if options.get(o))
        external_id = external_id.strip()
        if not external_id:
            raise CommandError(f"--{option.replace('_', '-')} needs an id.")
        kind = PLACEMENT_OPTIONS[option]
        with transaction.atomic():
            # It may not have reported anything yet: placing it now homes what arrives later.
            found = domain.placement(kind, external_id)
            domain.place(found, site)
        locks = found.locks.count()
        self.stdout.write(f"{kind.label} {external_id} is in {site.name}; {locks} lock(s) and door(s) moved with it")

    def list(self, **_):
        for site in Site.objects.prefetch_related("placements").order_by("name"):
            placed = ", ".join(f"{p.get_kind_display()} {p.external_id}" for p in site.placements.all()) or "nothing"
            self.stdout.write(f"{site.name} ({site.timezone}): {placed}")

"""Reconcile PDK subscriptions now and print what it took."""

from django.core.management.base import BaseCommand, CommandError

from subscriptions import sync
from subscriptions.models import PdkConnection


class Command(BaseCommand):
    help = "Reconcile the portal's PDK subscriptions with PDK now (all connections, or one)."

    def add_arguments(self, parser):
        parser.add_argument("--connection", help="Name of one PDK connection.")

    def handle(self, *args, connection=None, **options):
        connections = PdkConnection.objects.all()
        if connection:
            connections = connections.filter(name=connection)
            if not connections:
                raise CommandError(f"No PDK connection named {connection!r}.")
        failed = 0
        for found in connections:
            result = sync.reconcile(found).as_dict()
            errors = result.pop("errors")
            self.stdout.write(f"{found.name}: " + ", ".join(f"{key} {value}" for key, value in result.items()))
            for error in errors:
                self.stdout.write(f"  failed: {error}")
            failed += result["failed"]
        if failed:
            raise CommandError(f"{failed} failure(s); see above.")

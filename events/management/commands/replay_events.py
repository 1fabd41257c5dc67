"""Process stored events again: failed, unhandled, by id, type or source."""

from django.core.management.base import BaseCommand, CommandError

from events import processing, sources
from events.models import Event


class Command(BaseCommand):
    help = "Mark matching events pending and publish their processing tasks again."

    def add_arguments(self, parser):
        parser.add_argument("--failed", action="store_true", help="Events whose processing failed.")
        parser.add_argument("--unhandled", action="store_true", help="Events no handler took.")
        parser.add_argument("--ids", nargs="+", type=int, metavar="ID", help="These event ids.")
        parser.add_argument("--type", dest="event_type", help="Only this event type.")
        parser.add_argument("--source", choices=sorted(sources.MODULES), help="Only this vendor.")
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be replayed.")

    def handle(self, *args, failed, unhandled, ids, event_type, source, dry_run, **options):
        if not (failed or unhandled or ids or event_type or source):
            raise CommandError("Say what to replay: --failed, --unhandled, --ids, --type and/or --source.")
        events = Event.objects.all()
        statuses = [s for s, wanted in ((Event.Status.FAILED, failed), (Event.Status.UNHANDLED, unhandled)) if wanted]
        if statuses:
            events = events.filter(status__in=statuses)
        if ids:
            events = events.filter(pk__in=ids)
            missing = sorted(set(ids) - set(Event.objects.filter(pk__in=ids).values_list("pk", flat=True)))
            if missing:
                self.stderr.write(f"No events with ids {', '.join(map(str, missing))}.")
        if event_type:
            events = events.filter(event_type=event_type)
        if source:
            events = events.filter(source=source)
        if dry_run:
            self.stdout.write(f"{events.count()} events would be replayed.")
            return
        count = processing.replay(events)
        self.stdout.write(f"Replaying {count} events: the dispatcher publishes them now.")

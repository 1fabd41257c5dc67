"""Publish a processing task for every newly committed event, continuously (the outbox relay)."""

import logging
import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from events import processing

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Publish processing tasks for newly stored events; run one or more next to the workers."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="Publish what is waiting, then exit.")
        parser.add_argument("--batch", type=int, default=500)

    def handle(self, *args, once=False, batch=500, **options):
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        interval = settings.PORTAL_DISPATCH_INTERVAL_SECONDS
        backoff = interval
        log.info("dispatcher started (every %.2fs, batches of %d)", interval, batch)
        while not stopping:
            try:
                published = processing.dispatch_new(limit=batch)
            except Exception as exc:  # database or broker down: keep trying, a little slower each time
                if once:
                    raise
                close_old_connections()
                log.warning("dispatch failed (%s); retrying in %.1fs", exc.__class__.__name__, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = interval
            if once and published < batch:
                break
            if published < batch:
                time.sleep(interval)
        log.info("dispatcher stopped")

"""The Celery app, configured from Django settings (CELERY_ namespace), and the beat defaults."""

import os

from celery import Celery
from celery.schedules import crontab
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Defaults only: the DatabaseScheduler copies these into django-celery-beat's tables, where an
# operator can change them in the admin.
app.conf.beat_schedule = {
    "requeue-stale-pending-events": {
        "task": "events.tasks.requeue_pending_events",
        "schedule": settings.PORTAL_REQUEUE_EVERY_SECONDS,
    },
    "prune-old-deliveries": {
        "task": "events.tasks.prune_old_records",
        "schedule": crontab(minute=17, hour=3),
    },
    "reconcile-pdk-subscriptions": {
        "task": "subscriptions.tasks.reconcile_all",
        "schedule": 60.0 * settings.PORTAL_PDK_RECONCILE_MINUTES,
    },
    "send-due-notifications": {
        "task": "subscriptions.tasks.send_due_notifications",
        "schedule": settings.PORTAL_NOTIFY_SWEEP_SECONDS,
    },
    "send-notification-reminders": {
        "task": "subscriptions.tasks.send_notification_reminders",
        "schedule": 60.0,
    },
}

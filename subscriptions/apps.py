"""App config of the subscriptions app."""

from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    name = "subscriptions"

    def ready(self):
        from events.signals import events_processed
        from portal.signals import alarm_changes_committed
        from subscriptions import notifications

        alarm_changes_committed.connect(notifications.publish_fan_out, dispatch_uid="notifications-fan-out")
        events_processed.connect(notifications.note_events_for_rules, dispatch_uid="notifications-event-notices")

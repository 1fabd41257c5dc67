"""What the building domain tells the rest of the portal, without knowing who listens."""

from django.dispatch import Signal

# Sent after a commit that recorded alarm changes (portal.models.AlarmChange rows); no arguments.
alarm_changes_committed = Signal()

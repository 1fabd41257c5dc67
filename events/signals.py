"""What the event store tells the rest of the portal while it processes events, without knowing who listens."""

from django.dispatch import Signal

# Sent inside the transaction that processed a batch, with ``events``: those that ended processed,
# and ``where``: {event id: {"site_id", "lock_id"}} as their handlers found them (None for an ignored
# type). Receivers write what must commit, or roll back, with that processing.
events_processed = Signal()

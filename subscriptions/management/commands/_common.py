"""What the subscription commands share with the portal's: one readable line per invalid field."""

from portal.errors import describe

__all__ = ["describe"]

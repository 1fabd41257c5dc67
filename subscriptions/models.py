"""Subscription models (PDK connections and notification rules arrive with their issues)."""

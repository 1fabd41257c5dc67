"""Who subscribes to what: PDK webhook subscriptions and managers' notification rules."""

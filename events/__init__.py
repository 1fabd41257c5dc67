"""Everything inbound: endpoints, raw deliveries, deduplicated events and their processing."""

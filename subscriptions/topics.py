"""PDK's webhook topics, as its documentation lists them: organization events and panel events."""

# A subscription takes topics of one kind only; PDK refuses a mix.
ORGANIZATION_TOPICS = frozenset(
    [
        "ou.created",
        "ou.deleted",
        "ou.updated",
        "panel.created",
        "panel.deleted",
        "panel.updated",
        "permission.accepted",
        "permission.created",
        "permission.deleted",
        "permission.updated",
    ]
)
PANEL_TOPICS = frozenset(
    [
        "door.alarm.forced",
        "door.alarm.forced.cleared",
        "door.alarm.propped.alloff",
        "door.alarm.propped.off",
        "door.alarm.propped.on",
        "door.autoopen.off",
        "door.autoopen.on",
        "door.autoopen.override.off",
        "door.autoopen.override.on",
        "door.forceclose.off",
        "door.forceclose.on",
        "door.forceopen.off",
        "door.forceopen.on",
        "door.input.dps.closed",
        "door.input.dps.opened",
        "door.input.relay.off",
        "door.input.relay.on",
        "door.input.rex.off",
        "door.input.rex.on",
        "door.input.virtualread",
        "door.request.allowed",
        "door.request.denied",
        "door.request.duress",
        "door.request.found",
        "door.request.multiallowed",
        "door.request.unknown",
        "endpoint.added",
        "endpoint.alarm.comloss.off",
        "endpoint.alarm.comloss.on",
        "endpoint.deleted",
        "endpoint.input.bh.state",
        "endpoint.input.lp.off",
        "endpoint.input.lp.on",
        "endpoint.input.pb.connected",
        "endpoint.input.pb.disconnected",
        "endpoint.input.pb.status",
        "endpoint.input.pi.off",
        "endpoint.input.pi.on",
        "endpoint.input.pi.status",
        "endpoint.input.po.absent",
        "endpoint.input.po.present",
        "endpoint.input.pp.status",
        "entity.added",
        "entity.modified",
        "entity.removed",
        "error.card.parse",
        "error.packetized.protocol",
        "floorgroup.activated",
        "notification.client.command",
        "notification.device.created",
        "notification.device.deleted",
        "notification.device.updated",
        "notification.intercom.created",
        "notification.intercom.deleted",
        "notification.intercom.updated",
        "notification.person.created",
        "notification.person.deleted",
        "notification.person.updated",
        "panel.connected",
        "panel.disconnected",
    ]
)
ALL_TOPICS = ORGANIZATION_TOPICS | PANEL_TOPICS


def kind_of(topic: str) -> str | None:
    """'organization', 'panel', or None for a topic PDK does not document."""
    if topic in ORGANIZATION_TOPICS:
        return "organization"
    if topic in PANEL_TOPICS:
        return "panel"
    return None

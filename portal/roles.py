"""The roles of a building's staff, as Django groups: what a building manager and a viewer may do."""

BUILDING_MANAGER = "Building manager"
VIEWER = "Viewer"

# What every role may see (in their own sites only: the admin scopes every list to them).
VIEWABLE = {
    "portal": [
        "site",
        "placement",
        "panel",
        "hub",
        "lock",
        "activity",
        "alarm",
        "resident",
        "accessgrant",
        "credential",
        "camera",
        "intercom",
    ],
    "events": ["endpoint", "event", "delivery", "rejectedrequest"],
    "subscriptions": ["pdkconnection", "pdksubscription", "notificationrule", "notification", "notificationattempt"],
}
# What a building manager may do beyond looking: acknowledge and resolve alarms, and manage the
# notification rules of their sites.
MANAGER_CAN = {
    "portal": ["change_alarm"],
    "subscriptions": ["add_notificationrule", "change_notificationrule", "delete_notificationrule"],
}


def codenames(role: str) -> dict[str, list[str]]:
    wanted = {app: [f"view_{model}" for model in models] for app, models in VIEWABLE.items()}
    if role == BUILDING_MANAGER:
        for app, perms in MANAGER_CAN.items():
            wanted[app] = wanted.get(app, []) + perms
    return wanted


def ensure_roles(apps) -> None:
    """Create both groups with their permissions (idempotent; run by data migrations)."""
    from django.contrib.auth.management import create_permissions
    from django.db.models import Q

    for app_config in apps.get_app_configs():
        app_config.models_module = True  # historical apps: let create_permissions see their models
        create_permissions(app_config, apps=apps, verbosity=0)
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    for role in (BUILDING_MANAGER, VIEWER):
        group, _ = group_model.objects.get_or_create(name=role)
        wanted = Q(pk__in=[])
        for app, perms in codenames(role).items():
            wanted |= Q(content_type__app_label=app, codename__in=perms)
        group.permissions.set(permission_model.objects.filter(wanted))

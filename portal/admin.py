"""What building managers see of the building model: sites, placements, locks, activity, alarms."""

from django.contrib import admin

from portal import domain
from portal.admin_base import ReadOnlyAdmin
from portal.models import AccessGrant, Activity, Alarm, Lock, Placement, Resident, Site


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ["name", "timezone", "created_at"]
    search_fields = ["name"]


@admin.register(Placement)
class PlacementAdmin(admin.ModelAdmin):
    list_display = ["kind", "external_id", "name", "site", "online", "first_seen_at"]
    list_filter = ["kind", "online", ("site", admin.EmptyFieldListFilter), "site"]
    list_select_related = ["site"]
    search_fields = ["=external_id", "name"]
    readonly_fields = ["kind", "external_id", "online", "online_as_of", "first_seen_at"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if "site" in form.changed_data:
            domain.place(obj, obj.site)  # placing a panel, hub or account re-homes its locks


@admin.register(Lock)
class LockAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "vendor", "site", "locked", "door_open", "online", "battery_level", "last_activity_at"]
    list_filter = ["vendor", "site", "online", "locked"]
    list_select_related = ["site"]
    search_fields = ["name", "=external_id"]


@admin.register(Activity)
class ActivityAdmin(ReadOnlyAdmin):
    list_display = ["occurred_at", "lock", "site", "action", "result", "method", "actor"]
    list_filter = ["action", "result", "site", "occurred_at"]
    list_select_related = ["lock", "site"]
    search_fields = ["lock__name", "actor"]


@admin.register(Alarm)
class AlarmAdmin(ReadOnlyAdmin):
    list_display = ["kind", "severity", "state", "lock", "subject", "site", "occurrences", "raised_at", "cleared_at"]
    list_filter = ["state", "severity", "kind", "site"]
    list_select_related = ["lock", "site"]
    search_fields = ["=subject", "lock__name"]


@admin.register(Resident)
class ResidentAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "vendor", "email", "site"]
    list_filter = ["vendor", "site"]
    list_select_related = ["site"]
    search_fields = ["name", "email", "=external_id"]


@admin.register(AccessGrant)
class AccessGrantAdmin(ReadOnlyAdmin):
    list_display = ["resident", "lock", "level", "granted_at", "revoked_at", "active"]
    list_filter = ["level"]
    list_select_related = ["resident", "lock"]
    search_fields = ["resident__name", "resident__email", "lock__name"]

    @admin.display(boolean=True)
    def active(self, obj: AccessGrant) -> bool:
        return obj.active

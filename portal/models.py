"""The building domain: sites (buildings) that endpoints, locks and people belong to."""

import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not a known IANA timezone (e.g. Europe/Paris).")


class Site(models.Model):
    """A building a manager is responsible for."""

    name = models.CharField(max_length=200, unique=True)
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="sites",
        help_text="Managers and viewers who see this site (superusers see every site).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Placement(models.Model):
    """Something a vendor reports that belongs in a building: a PDK panel, an SPK hub, a Seam account.

    Locks inherit their site from their placement; a placement with no site is waiting for a
    superuser to place it, and placing it re-homes its locks.
    """

    class Kind(models.TextChoices):
        PDK_PANEL = "pdk_panel", "PDK panel"
        PDK_ORG = "pdk_org", "PDK organization"
        SPK_HUB = "spk_hub", "SPK hub"
        SPK_PARTNER = "spk_partner", "SPK partner org"
        SEAM_WORKSPACE = "seam_workspace", "Seam workspace"
        SEAM_ACCOUNT = "seam_account", "Seam connected account"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    external_id = models.CharField(max_length=200)
    name = models.CharField(max_length=200, blank=True)
    site = models.ForeignKey(Site, null=True, blank=True, on_delete=models.SET_NULL, related_name="placements")
    online = models.BooleanField(null=True)
    online_as_of = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=40, blank=True, help_text="Lifecycle: claimed, suspended, deleted, …")
    status_as_of = models.DateTimeField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True, help_text="Vendor fields kept as reported.")
    first_seen_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "external_id"], name="placement_unique")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.name or self.external_id}"


class PlacementKindManager(models.Manager):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def get_queryset(self):
        return super().get_queryset().filter(kind=self.kind)


class Panel(Placement):
    """A PDK cloud node (panel): its online state, power readings and doors."""

    objects = PlacementKindManager(Placement.Kind.PDK_PANEL)

    class Meta:
        proxy = True


class Hub(Placement):
    """An SPK hub through its lifecycle: provisioned, claimed, re-claimed, suspended, decommissioned."""

    objects = PlacementKindManager(Placement.Kind.SPK_HUB)

    class Meta:
        proxy = True


class Lock(models.Model):
    """A door or lock as a building manager thinks of it, whatever the vendor.

    Each state field keeps the vendor time it is as of, so an older event never overwrites it.
    """

    vendor = models.CharField(max_length=16)
    external_id = models.CharField(max_length=200, help_text="PDK: panel:door. SPK: lock uuid. Seam: device id.")
    name = models.CharField(max_length=200, blank=True)
    placement = models.ForeignKey(Placement, null=True, blank=True, on_delete=models.SET_NULL, related_name="locks")
    site = models.ForeignKey(Site, null=True, blank=True, on_delete=models.SET_NULL, related_name="locks")
    locked = models.BooleanField(null=True)
    locked_as_of = models.DateTimeField(null=True, blank=True)
    door_open = models.BooleanField(null=True, help_text="Door position sensor (PDK DPS).")
    door_open_as_of = models.DateTimeField(null=True, blank=True)
    online = models.BooleanField(null=True)
    online_as_of = models.DateTimeField(null=True, blank=True)
    battery_level = models.FloatField(null=True, blank=True)
    battery_status = models.CharField(max_length=16, blank=True)
    battery_as_of = models.DateTimeField(null=True, blank=True)
    last_activity_at = models.DateTimeField(null=True, blank=True)
    removed_at = models.DateTimeField(null=True, blank=True, help_text="When the vendor reported it deleted.")
    details = models.JSONField(default=dict, blank=True, help_text="Vendor fields kept as reported.")

    class Meta:
        ordering = ["site__name", "name"]
        constraints = [models.UniqueConstraint(fields=["vendor", "external_id"], name="lock_unique_per_vendor")]

    def __str__(self) -> str:
        return self.name or f"{self.vendor} {self.external_id}"


class LockAlias(models.Model):
    """An id a lock was known by before (SPK LockUuidChanged): late events under it still find it."""

    vendor = models.CharField(max_length=16)
    external_id = models.CharField(max_length=200)
    lock = models.ForeignKey(Lock, on_delete=models.CASCADE, related_name="aliases")
    replaced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "lock aliases"
        constraints = [models.UniqueConstraint(fields=["vendor", "external_id"], name="lock_alias_unique")]

    def __str__(self) -> str:
        return f"{self.external_id} → {self.lock}"


class Equipment(models.Model):
    """What vendors report beside locks; each state field keeps the vendor time it is as of."""

    vendor = models.CharField(max_length=16)
    external_id = models.CharField(max_length=200)
    name = models.CharField(max_length=200, blank=True)
    placement = models.ForeignKey(Placement, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    site = models.ForeignKey(Site, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=40, blank=True, help_text="registered, disabled, deleted, …")
    status_as_of = models.DateTimeField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True, help_text="Vendor fields kept as reported.")
    first_seen_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True
        ordering = ["site__name", "name"]

    def __str__(self) -> str:
        return self.name or f"{self.vendor} {self.external_id}"


class Camera(Equipment):
    """An SPK camera (3deye or RTSP), and the lock it watches when linked to one."""

    lock = models.ForeignKey(Lock, null=True, blank=True, on_delete=models.SET_NULL, related_name="cameras")

    class Meta(Equipment.Meta):
        constraints = [models.UniqueConstraint(fields=["vendor", "external_id"], name="camera_unique_per_vendor")]


class Intercom(Equipment):
    """A PDK intercom."""

    manufacturer = models.CharField(max_length=100, blank=True)

    class Meta(Equipment.Meta):
        constraints = [models.UniqueConstraint(fields=["vendor", "external_id"], name="intercom_unique_per_vendor")]


class Activity(models.Model):
    """One access attempt or door action, whoever the vendor; one row per vendor event."""

    event = models.OneToOneField("events.Event", on_delete=models.CASCADE, related_name="activity")
    occurred_at = models.DateTimeField()
    lock = models.ForeignKey(Lock, null=True, blank=True, on_delete=models.SET_NULL, related_name="activity")
    site = models.ForeignKey(Site, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    resident = models.ForeignKey("Resident", null=True, blank=True, on_delete=models.SET_NULL, related_name="activity")
    action = models.CharField(max_length=40, help_text="request, unlock, lock, door opened, …")
    result = models.CharField(max_length=40, blank=True, help_text="allowed, denied, unknown, …")
    method = models.CharField(max_length=60, blank=True)
    actor = models.CharField(max_length=200, blank=True, help_text="Who, as the vendor names them.")
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        verbose_name_plural = "activity"
        indexes = [
            models.Index(fields=["lock", "-occurred_at"], name="activity_lock_idx"),
            models.Index(fields=["-occurred_at", "-id"], name="activity_recent_idx"),  # the list's order
            models.Index(fields=["site", "-occurred_at"], name="activity_site_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.result}".strip()


class Alarm(models.Model):
    """One alarm per (kind, subject) while it is open; repeats add occurrences."""

    class State(models.TextChoices):
        ACTIVE = "active"
        ACKNOWLEDGED = "acknowledged"
        CLEARED = "cleared", "cleared (by the vendor)"
        RESOLVED = "resolved", "resolved (by a person)"

    class Severity(models.TextChoices):
        MINOR = "minor"
        MAJOR = "major"
        CRITICAL = "critical"

    OPEN_STATES = (State.ACTIVE, State.ACKNOWLEDGED)

    kind = models.CharField(max_length=40)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    subject = models.CharField(max_length=255, help_text="What the alarm is about, e.g. pdk:door:1070000:1.")
    lock = models.ForeignKey(Lock, null=True, blank=True, on_delete=models.SET_NULL, related_name="alarms")
    site = models.ForeignKey(Site, null=True, blank=True, on_delete=models.SET_NULL, related_name="alarms")
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    raised_at = models.DateTimeField(null=True, blank=True)
    last_raised_at = models.DateTimeField(null=True, blank=True)
    cleared_at = models.DateTimeField(null=True, blank=True)
    occurrences = models.PositiveIntegerField(default=0)
    raised_by = models.ForeignKey("events.Event", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    cleared_by = models.ForeignKey("events.Event", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.TextField(blank=True, help_text="What the people who acknowledged or resolved it wrote.")

    class Meta:
        ordering = ["-last_raised_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "subject"], condition=Q(state__in=["active", "acknowledged"]), name="alarm_open_once"
            )
        ]
        indexes = [models.Index(fields=["kind", "subject", "-cleared_at"], name="alarm_subject_idx")]

    def __str__(self) -> str:
        return f"{self.kind} on {self.lock or self.subject}"


class AlarmChange(models.Model):
    """An alarm raised (again) or cleared, kept until the notification rules have heard of it.

    Written in the transaction that changes the alarm, so a broker that is down when it commits
    delays notifications instead of losing them: whatever is not yet fanned out is picked up by
    the next fan-out task or beat's sweep.
    """

    alarm = models.ForeignKey(Alarm, on_delete=models.CASCADE, related_name="changes")
    change = models.CharField(max_length=16, help_text="raised (again) or cleared")
    occurrences = models.PositiveIntegerField(help_text="The alarm's occurrence count after this change.")
    event = models.ForeignKey(
        "events.Event",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="alarm_changes",
        help_text="The event that made the change: rules that name its type hear of it as this change.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    fanned_out_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["id"], name="alarmchange_pending_idx", condition=Q(fanned_out_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.alarm} {self.change}"


class AlarmOccurrence(models.Model):
    """Which event raised an alarm (again): makes raising idempotent per event."""

    alarm = models.ForeignKey(Alarm, on_delete=models.CASCADE, related_name="occurrence_events")
    event = models.OneToOneField("events.Event", on_delete=models.CASCADE, related_name="+")
    occurred_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.alarm} at {self.occurred_at:%Y-%m-%d %H:%M:%S}"


class Resident(models.Model):
    """A person with access somewhere: an SPK user, a PDK person, a Seam ACS user."""

    vendor = models.CharField(max_length=16)
    external_id = models.CharField(max_length=200)
    name = models.CharField(max_length=200, blank=True)
    email = models.CharField(max_length=254, blank=True)
    phone = models.CharField(max_length=40, blank=True)
    site = models.ForeignKey(Site, null=True, blank=True, on_delete=models.SET_NULL, related_name="residents")
    status = models.CharField(max_length=20, blank=True, help_text="active, suspended, disabled, deleted")
    status_as_of = models.DateTimeField(null=True, blank=True)
    active_from = models.DateTimeField(null=True, blank=True, help_text="PDK activeDate.")
    expires_at = models.DateTimeField(null=True, blank=True, help_text="PDK expireDate.")
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["name", "external_id"]
        constraints = [models.UniqueConstraint(fields=["vendor", "external_id"], name="resident_unique_per_vendor")]

    def __str__(self) -> str:
        return self.name or self.email or f"{self.vendor} {self.external_id}"


class AccessGrant(models.Model):
    """What a resident may open. Active while the latest grant is newer than the latest revoke, so
    grants and revokes give the same answer in whatever order they arrive."""

    class Level(models.TextChoices):
        OWNER = "OWNER"
        ADMIN = "ADMIN"
        USER = "USER"
        GUEST = "GUEST"

    resident = models.ForeignKey(Resident, on_delete=models.CASCADE, related_name="grants")
    lock = models.ForeignKey(Lock, on_delete=models.CASCADE, related_name="grants")
    level = models.CharField(max_length=8, choices=Level.choices, default=Level.USER)
    granted_by = models.CharField(max_length=200, blank=True)
    granted_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["resident", "lock"], name="grant_unique")]

    def __str__(self) -> str:
        return f"{self.resident} → {self.lock} ({self.level})"

    @property
    def active(self) -> bool:
        return self.granted_at is not None and (self.revoked_at is None or self.granted_at > self.revoked_at)


class Credential(models.Model):
    """A key or credential: lock key slots, physical, wallet and temp keys, plates, access codes.

    Active while the latest issue is newer than the latest removal, in whatever order they arrive.
    """

    class Kind(models.TextChoices):
        KEY_SLOT = "key_slot", "lock key slot"
        PHYSICAL_KEY = "physical_key", "physical key"
        WALLET_KEY = "wallet_key", "wallet key"
        TEMP_KEY = "temp_key", "temporary key"
        LICENSE_PLATE = "license_plate", "license plate"
        ACCESS_CODE = "access_code", "access code"
        PIN = "pin", "PIN"
        CARD = "card", "card or mobile credential"

    vendor = models.CharField(max_length=16)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    external_id = models.CharField(max_length=200)
    label = models.CharField(max_length=200, blank=True)
    resident = models.ForeignKey(Resident, null=True, blank=True, on_delete=models.SET_NULL, related_name="credentials")
    lock = models.ForeignKey(Lock, null=True, blank=True, on_delete=models.SET_NULL, related_name="credentials")
    status = models.CharField(max_length=40, blank=True, help_text="Vendor state: prepared, set on device, …")
    status_as_of = models.DateTimeField(null=True, blank=True)
    valid_from = models.DateTimeField(null=True, blank=True)
    valid_until = models.DateTimeField(null=True, blank=True)
    issued_at = models.DateTimeField(null=True, blank=True)
    removed_at = models.DateTimeField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-issued_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["vendor", "kind", "external_id"], name="credential_unique")]
        indexes = [models.Index(fields=["-issued_at", "-id"], name="credential_recent_idx")]  # the list's order

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.label or self.external_id}"

    @property
    def active(self) -> bool:
        return self.issued_at is not None and (self.removed_at is None or self.issued_at > self.removed_at)

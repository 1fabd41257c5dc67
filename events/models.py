"""Inbound storage: webhook endpoints, raw deliveries, deduplicated events, rejected requests."""

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from events import sources


class Endpoint(models.Model):
    """One URL a vendor posts to, with its own verification settings."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    source = models.CharField(max_length=16, choices=sources.CHOICES)
    name = models.CharField(max_length=200)
    site = models.ForeignKey("portal.Site", null=True, blank=True, on_delete=models.SET_NULL)
    active = models.BooleanField(default=True)
    secret = models.CharField(
        max_length=255,
        blank=True,
        help_text="PDK: the subscription's signing secret. Seam: the whsec_… secret. "
        "SPK: the static token (apiKeyHeader or bearerToken).",
    )
    # Secret rotation: the replaced secret stays valid until this time, so deliveries the vendor
    # signed before it learnt the new secret are still accepted.
    previous_secret = models.CharField(
        max_length=255, blank=True, help_text="PDK: the secret before the last rotation (write-only)."
    )
    previous_secret_expires_at = models.DateTimeField(
        null=True, blank=True, help_text="PDK: the previous secret is refused from this time on."
    )
    basic_username = models.CharField(max_length=200, blank=True, help_text="PDK: optional Basic user.")
    basic_password = models.CharField(max_length=200, blank=True, help_text="PDK: optional Basic password.")
    token_header = models.CharField(
        max_length=100,
        blank=True,
        help_text="SPK apiKeyHeader: the header carrying the token. Blank: Authorization: Bearer.",
    )
    partner_id = models.CharField(
        max_length=200, blank=True, help_text="SPK: the org id that detail.partnerId must equal."
    )
    unauthenticated = models.BooleanField(
        default=False,
        help_text="SPK only: accept deliveries without any token (SPK's 'none' authentication).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["source", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_source_display()})"

    def clean(self) -> None:
        module = sources.get(self.source)
        if module is not None:
            problems = module.endpoint_problems(self)
            if problems:
                raise ValidationError(problems)

    def valid_secrets(self, now=None) -> list[str]:
        """The secrets a delivery may be signed with now: the current one, and the previous one
        during a rotation's overlap window."""
        now = now or timezone.now()
        secrets = [self.secret] if self.secret else []
        expires = self.previous_secret_expires_at
        if self.previous_secret and expires is not None and expires > now:
            secrets.append(self.previous_secret)
        return secrets

    @property
    def path(self) -> str:
        return f"/webhooks/{self.source}/{self.id}/"

    @property
    def url(self) -> str:
        return settings.PORTAL_PUBLIC_URL + self.path

    @property
    def verification(self) -> str:
        """What a delivery must carry, in words, without revealing any secret."""
        module = sources.get(self.source)
        return module.describe_verification(self) if module else "unknown source"


class Event(models.Model):
    """One vendor event, stored once however often it is delivered."""

    class Status(models.TextChoices):
        PENDING = "pending"
        PROCESSED = "processed"
        FAILED = "failed"
        UNHANDLED = "unhandled"

    source = models.CharField(max_length=16, choices=sources.CHOICES)
    event_type = models.CharField(max_length=150)
    dedup_key = models.CharField(max_length=255, help_text="What makes this event unique at its vendor.")
    message_id = models.CharField(max_length=255, blank=True, help_text="Seam: the svix-id of the message.")
    occurred_at = models.DateTimeField(null=True, blank=True, help_text="The vendor's domain time.")
    received_at = models.DateTimeField()
    # No database constraint or index on the endpoint links: every insert would lock the endpoint
    # row to check it, and concurrent deliveries to one endpoint would queue on that lock; nothing
    # looks events up by endpoint on a hot path. Django still applies SET_NULL on delete.
    endpoint = models.ForeignKey(
        Endpoint,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    payload = models.JSONField()
    payload_flags = models.JSONField(
        default=list, blank=True, help_text="Problems found while storing the payload (kept, not fatal)."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True, help_text="When its processing task was last published.")

    class Meta:
        ordering = ["-received_at", "-id"]
        permissions = [("reprocess_event", "Can reprocess events")]
        constraints = [
            models.UniqueConstraint(fields=["source", "dedup_key"], name="event_unique_per_source"),
        ]
        indexes = [
            models.Index(fields=["-received_at", "-id"], name="event_received_idx"),
            models.Index(fields=["status", "-received_at"], name="event_status_idx"),
            models.Index(fields=["source", "event_type", "-received_at"], name="event_type_idx"),
            # The dispatcher's and the requeue task's queries: small partial indexes over pending work.
            models.Index(
                fields=["id"],
                name="event_unpublished_idx",
                condition=Q(status="pending", enqueued_at__isnull=True),
            ),
            models.Index(fields=["enqueued_at"], name="event_pending_idx", condition=Q(status="pending")),
            # The admin's search by svix-id.
            models.Index(fields=["message_id"], name="event_message_idx", condition=~Q(message_id="")),
        ]

    def __str__(self) -> str:
        return f"{self.source} {self.event_type} #{self.pk}"


class Delivery(models.Model):
    """One accepted HTTP request, exactly as received (pruned after the retention period)."""

    endpoint = models.ForeignKey(
        Endpoint,
        null=True,
        on_delete=models.SET_NULL,
        related_name="deliveries",
        db_constraint=False,
        db_index=False,
    )
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    received_at = models.DateTimeField(db_index=True)
    headers = models.JSONField(help_text="Request headers, secrets redacted.")
    body = models.BinaryField()
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    duplicate = models.BooleanField(default=False, help_text="The event had already been stored.")

    class Meta:
        ordering = ["-received_at", "-id"]
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return f"delivery #{self.pk}"


class RejectedRequest(models.Model):
    """A request to a known endpoint that was refused (bad signature, bad body): no event came of it."""

    endpoint = models.ForeignKey(Endpoint, null=True, on_delete=models.SET_NULL, related_name="rejections")
    received_at = models.DateTimeField(db_index=True)
    status_code = models.PositiveSmallIntegerField()
    reason = models.CharField(max_length=500)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    headers = models.JSONField(help_text="Request headers, secrets redacted.")

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.status_code} {self.reason}"

"""generate_load_data at a small scale: consistent rows, realistic payloads, and admin lists that render."""

import datetime as dt
import json
from io import StringIO

import pytest
from django.contrib import admin
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.models import Count, F, Max
from django.urls import reverse

from events import sources
from events.models import Delivery, Endpoint, Event
from events.sources.base import Inbound
from portal.models import AccessGrant, Activity, Alarm, AlarmOccurrence, Credential, Lock, Placement, Resident, Site

UNTIL = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
SMALL = {
    "events": 2000,
    "activity": 400,
    "locks": 50,
    "residents": 100,
    "grants": 150,
    "credentials": 80,
    "alarms": 30,
    "sites": 3,
    "cameras": 5,
    "intercoms": 4,
    "deliveries": 100,
    "rejected": 10,
}


def generate(**options):
    out = StringIO()
    call_command("generate_load_data", stdout=out, stderr=StringIO(), until=UNTIL, no_analyze=True, **options)
    return out.getvalue()


@pytest.fixture
def generated(db):
    output = generate(seed=5, **SMALL)
    with connection.cursor() as cursor:  # check the deferred foreign keys of every row now
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    return output


def test_makes_the_counts_asked_for_and_says_so(generated):
    assert Event.objects.count() == 2000
    assert Activity.objects.count() == 400
    assert Lock.objects.count() == 50
    assert Resident.objects.count() == 100
    assert AccessGrant.objects.count() == 150
    assert Credential.objects.count() == 80
    assert Alarm.objects.count() == 30
    assert Site.objects.count() == 3
    assert Endpoint.objects.count() == 9  # one per vendor and site
    assert Delivery.objects.count() == 100
    assert "events" in generated and "2,000" in generated


def test_events_span_the_30_days_before_until_mostly_processed(generated):
    assert Event.objects.aggregate(last=Max("received_at"))["last"] <= UNTIL
    assert not Event.objects.filter(received_at__lt=UNTIL - dt.timedelta(days=30)).exists()
    statuses = dict(Event.objects.values_list("status").annotate(n=Count("id")))
    assert statuses["processed"] > 1800
    assert statuses.get("failed", 0) > 0
    pending = Event.objects.filter(status="pending")
    assert not pending.filter(received_at__lt=UNTIL - dt.timedelta(hours=6)).exists()
    assert not pending.filter(enqueued_at__isnull=True).exists()  # not for the dispatcher
    assert not Event.objects.filter(status="failed", last_error="").exists()


def test_payloads_identify_as_the_ingress_would_store_them(generated):
    for event in Event.objects.order_by("id")[::7]:
        body = json.dumps(event.payload).encode()
        identified = sources.get(event.source).identify(Inbound(headers={}, body=body))
        assert (identified.event_type, identified.dedup_key) == (event.event_type, event.dedup_key)
        assert abs((identified.occurred_at - event.occurred_at).total_seconds()) < 1


def test_activity_rows_come_from_door_events_of_their_lock(generated):
    for activity in Activity.objects.select_related("event", "lock")[:200]:
        assert activity.event.status == "processed"
        assert activity.event.source == activity.lock.vendor
        assert activity.site_id == activity.lock.site_id
        assert activity.occurred_at == activity.event.occurred_at
        assert activity.lock.external_id.split(":")[-1] in json.dumps(activity.event.payload)
    last = dict(Activity.objects.values_list("lock").annotate(last=Max("occurred_at")))
    for lock in Lock.objects.filter(pk__in=last):
        assert lock.last_activity_at == last[lock.pk]


def test_locks_grants_and_credentials_belong_together(generated):
    assert not Lock.objects.filter(site__isnull=True).exists()
    assert not Lock.objects.exclude(site=F("placement__site")).exists()
    assert Placement.objects.filter(kind=Placement.Kind.PDK_PANEL).exists()
    assert not AccessGrant.objects.exclude(lock__site=F("resident__site")).exists()


def test_alarms_have_their_raising_and_clearing_events(generated):
    for alarm in Alarm.objects.all():
        occurrences = AlarmOccurrence.objects.filter(alarm=alarm)
        assert occurrences.count() == alarm.occurrences >= 1
        assert alarm.raised_by_id == occurrences.order_by("occurred_at").first().event_id
        assert alarm.raised_at <= alarm.last_raised_at
        if alarm.state == Alarm.State.CLEARED:
            assert alarm.cleared_by_id is not None and alarm.cleared_at >= alarm.last_raised_at
        else:
            assert alarm.cleared_by_id is None
    assert Alarm.objects.filter(state__in=Alarm.OPEN_STATES).exists()


def test_refuses_a_database_with_events_unless_appending(generated):
    with pytest.raises(CommandError, match="--append"):
        generate(seed=6, **SMALL)
    generate(seed=6, append=True, **{**SMALL, "events": 500, "activity": 100, "alarms": 5, "deliveries": 10})
    assert Event.objects.count() == 2500
    assert Site.objects.count() == 6
    assert Activity.objects.count() == 500


@pytest.mark.django_db
def test_the_same_seed_makes_the_same_data():
    class Undo(Exception):
        pass

    def digest():
        events = list(Event.objects.order_by("id").values_list("source", "event_type", "dedup_key", "received_at"))
        locks = list(Lock.objects.order_by("id").values_list("external_id", "name", "site__name"))
        return events, locks

    made = []
    for _ in range(2):
        with pytest.raises(Undo), transaction.atomic():
            generate(seed=9, **{**SMALL, "events": 300, "activity": 50, "alarms": 5})
            made.append(digest())
            raise Undo
    assert made[0] == made[1]
    assert made[0][0]


def test_every_admin_list_and_the_main_pages_render(generated, admin_client):
    for model, _ in admin.site._registry.items():
        if model._meta.app_label not in ("portal", "events", "subscriptions"):
            continue
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        assert admin_client.get(url).status_code == 200, url
    busiest = Activity.objects.values("lock").annotate(n=Count("id")).order_by("-n")[0]["lock"]
    assert admin_client.get(reverse("admin:portal_lock_change", args=[busiest])).status_code == 200
    resident = Resident.objects.first()
    assert admin_client.get(reverse("admin:portal_resident_change", args=[resident.pk])).status_code == 200
    alarm = Alarm.objects.first()
    assert admin_client.get(reverse("admin:portal_alarm_change", args=[alarm.pk])).status_code == 200
    assert admin_client.get(reverse("admin:index")).status_code == 200

"""The admin's front page: each figure right, scoped to the user's sites, and a link to its list."""

import re

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from events.models import Event
from portal.models import Alarm, Lock, Site
from subscriptions.models import Notification, NotificationRule

pytestmark = pytest.mark.django_db


def figure(page: str, label: str) -> tuple[str, int]:
    """The link and the value of the figure with this label."""
    match = re.search(rf'<a href="([^"]+)">{re.escape(label)}</a><b>(\d+)</b>', page)
    assert match, f"no figure {label!r}"
    return match.group(1).replace("&amp;", "&"), int(match.group(2))


@pytest.fixture
def buildings(endpoint_for):
    north, south = Site.objects.create(name="North"), Site.objects.create(name="South")
    for site, n in ((north, 2), (south, 3)):
        for i in range(n):
            lock = Lock.objects.create(vendor="seam", external_id=f"{site.name}-{i}", site=site, online=False)
            Alarm.objects.create(kind="door_forced", subject=f"{site}-{i}", severity="critical", site=site, lock=lock)
        Lock.objects.filter(site=site).update(battery_status="low")
        endpoint = endpoint_for("pdk", site=site)
        for i in range(n):
            Event.objects.create(
                source="pdk",
                event_type="door.request.allowed",
                dedup_key=f"{site}-{i}",
                received_at=timezone.now(),
                payload={},
                endpoint=endpoint,
                status="failed",
            )
    rule = NotificationRule.objects.create(name="desk", channel="email", emails=["desk@example.com"])
    Notification.objects.create(
        rule=rule,
        recipient="desk@example.com",
        alarm=Alarm.objects.filter(site=north).first(),
        occurrence="1",
        channel="email",
        site=north,
        status="dead",
        created_at=timezone.now(),
        due_at=timezone.now(),
    )
    return north, south


def test_a_superuser_sees_every_site_and_each_figure_links_to_its_list(admin_client, buildings):
    page = admin_client.get(reverse("admin:index")).content.decode()
    for label, expected in (
        ("critical alarms open", 5),
        ("doors and locks offline", 5),
        ("low batteries", 5),
        ("failed events", 5),
        ("dead notifications", 1),
        ("North", 2),
        ("South", 3),
    ):
        url, value = figure(page, label)
        assert value == expected, label
        listed = admin_client.get(url)
        assert listed.status_code == 200, url
        assert listed.context["cl"].result_count == expected, url
    assert 'aria-label="Events per hour by vendor' in page and 'class="pdk"' in page


def test_a_manager_sees_only_their_sites_figures(client, buildings, django_user_model):
    call_command("manager", "add", "nina", "--password", "a-long-enough-passphrase-42", "--sites", "North")
    client.force_login(django_user_model.objects.get(username="nina"))
    page = client.get(reverse("admin:index")).content.decode()
    assert figure(page, "critical alarms open")[1] == 2
    assert figure(page, "failed events")[1] == 2
    assert "South" not in page


def test_the_dashboard_costs_the_same_queries_whatever_the_data(admin_client, buildings, endpoint_for):
    with CaptureQueriesContext(connection) as before:
        admin_client.get(reverse("admin:index"))
    more = Site.objects.create(name="East")
    for i in range(30):
        Alarm.objects.create(kind="duress", subject=f"east-{i}", severity="major", site=more)
    with CaptureQueriesContext(connection) as after:
        admin_client.get(reverse("admin:index"))
    assert len(after) == len(before) <= 15

"""GET /metrics: Prometheus text whose numbers are the database's, for token holders and allowed addresses only."""

from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from events.models import Event
from portal.models import Alarm
from subscriptions.models import Notification, NotificationRule

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-5b1e0c"


def make_event(source, event_type, status, *, received_ago=60.0, latency=None, n=[0]):  # noqa: B006
    n[0] += 1
    now = timezone.now()
    received_at = now - timedelta(seconds=received_ago)
    return Event.objects.create(
        source=source,
        event_type=event_type,
        dedup_key=f"metrics-test-{n[0]}",
        received_at=received_at,
        payload={"secret": "payload-value-never-shown"},
        status=status,
        processed_at=received_at + timedelta(seconds=latency) if latency is not None else None,
    )


def scrape(client, **headers):
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    return text, {family.name: family for family in text_string_to_metric_families(text)}


def samples(family, name=None, **labels):
    """The values of a family's samples whose labels include ``labels``, keyed by the remaining labels."""
    found = {}
    for sample in family.samples:
        if (name is None or sample.name == name) and all(sample.labels.get(k) == v for k, v in labels.items()):
            rest = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in labels))
            found[rest] = sample.value
    return found


def value(family, **labels):
    (found,) = samples(family, **labels).values()
    return found


def test_metrics_parse_and_count_events_by_source_type_and_status(client):
    S = Event.Status
    for status, count in [(S.PROCESSED, 3), (S.FAILED, 2), (S.UNHANDLED, 1), (S.PENDING, 4)]:
        for _ in range(count):
            make_event("pdk", "door.request.allowed", status, latency=2.0 if status != S.PENDING else None)
    make_event("seam", "lock.locked", S.PROCESSED, latency=1.0)
    make_event("spk", "Mystery", S.UNHANDLED, latency=1.0)

    _, families = scrape(client)

    door = {"source": "pdk", "event_type": "door.request.allowed"}
    assert value(families["portal_events_received"], **door) == 10
    assert value(families["portal_events_processed"], **door) == 3
    assert value(families["portal_events_failed"], **door) == 2
    assert value(families["portal_events_unhandled"], **door) == 1
    assert value(families["portal_events_received"], source="seam", event_type="lock.locked") == 1
    assert value(families["portal_events_processed"], source="seam", event_type="lock.locked") == 1
    assert value(families["portal_events_unhandled"], source="spk", event_type="Mystery") == 1
    assert families["portal_events_received"].type == "counter"
    assert families["portal_events_failed"].type == "gauge"


def test_backlog_and_the_age_of_its_oldest_event(client):
    make_event("spk", "KeyAdded", Event.Status.PENDING, received_ago=30)
    make_event("spk", "KeyAdded", Event.Status.PENDING, received_ago=600)
    make_event("spk", "KeyAdded", Event.Status.PROCESSED, received_ago=5000, latency=1)

    _, families = scrape(client)

    assert value(families["portal_events_pending"], source="spk") == 2
    assert value(families["portal_events_pending"], source="pdk") == 0
    age = value(families["portal_events_oldest_pending_age_seconds"], source="spk")
    assert 600 <= age < 660
    assert value(families["portal_events_oldest_pending_age_seconds"], source="seam") == 0


def test_latency_covers_events_finished_in_the_last_five_minutes(client):
    for latency in [1.0, 2.0, 3.0, 4.0, 10.0]:
        make_event("seam", "lock.unlocked", Event.Status.PROCESSED, received_ago=latency + 30, latency=latency)
    make_event("seam", "lock.unlocked", Event.Status.FAILED, received_ago=40, latency=5.0)
    # Finished twenty minutes ago: outside the window.
    make_event("seam", "lock.unlocked", Event.Status.PROCESSED, received_ago=1300, latency=100.0)
    make_event("seam", "lock.unlocked", Event.Status.PENDING, received_ago=10)

    _, families = scrape(client)

    assert value(families["portal_event_latency_window_events"], source="seam") == 6
    assert value(families["portal_event_latency_window_seconds"], source="seam") == pytest.approx(25.0)
    quantiles = samples(families["portal_event_latency_seconds"], source="seam")
    # Interpolated like PostgreSQL's percentile_cont over 1, 2, 3, 4, 5, 10.
    assert quantiles[(("quantile", "0.5"),)] == pytest.approx(3.5)
    assert quantiles[(("quantile", "0.95"),)] == pytest.approx(8.75)
    assert quantiles[(("quantile", "0.99"),)] == pytest.approx(9.75)
    assert value(families["portal_event_latency_window_events"], source="pdk") == 0
    assert not samples(families["portal_event_latency_seconds"], source="pdk")


def test_notifications_sent_and_dead_by_channel(client):
    alarm = Alarm.objects.create(kind="door_forced", severity="critical", subject="pdk:door:1:1")
    email = NotificationRule.objects.create(name="desk", channel="email", emails=["desk@example.com"])
    hook = NotificationRule.objects.create(name="hook", channel="webhook", url="https://example.com/hook")
    now = timezone.now()
    rows = [
        (email, "sent"),
        (email, "sent"),
        (email, "dead"),
        (email, "retrying"),
        (hook, "sent"),
        (hook, "dead"),
        (hook, "dead"),
        (hook, "pending"),
        (hook, "skipped"),
    ]
    Notification.objects.bulk_create(
        Notification(
            rule=rule,
            recipient=f"r{i}",
            alarm=alarm,
            occurrence="1",
            change="raised",
            channel=rule.channel,
            status=status,
            due_at=now,
            created_at=now,
        )
        for i, (rule, status) in enumerate(rows)
    )

    _, families = scrape(client)

    assert value(families["portal_notifications_sent"], channel="email") == 2
    assert value(families["portal_notifications_sent"], channel="webhook") == 1
    assert value(families["portal_notifications_dead"], channel="email") == 1
    assert value(families["portal_notifications_dead"], channel="webhook") == 2
    assert value(families["portal_notifications_pending"], channel="email") == 1
    assert value(families["portal_notifications_pending"], channel="webhook") == 1


def test_empty_database_still_gives_every_family(client):
    _, families = scrape(client)
    for name in (
        "portal_events_received",
        "portal_events_processed",
        "portal_events_failed",
        "portal_events_unhandled",
        "portal_events_pending",
        "portal_events_oldest_pending_age_seconds",
        "portal_event_latency_seconds",
        "portal_event_latency_window_events",
        "portal_event_latency_window_seconds",
        "portal_notifications_sent",
        "portal_notifications_dead",
    ):
        assert name in families
    assert value(families["portal_notifications_sent"], channel="webhook") == 0


# --- protection -----------------------------------------------------------------------------------
def assert_forbidden(response, mentions: str):
    assert response.status_code == 403, response.content
    answer = response.json()
    assert answer["error"] == "forbidden"
    assert mentions in answer["detail"]
    assert TOKEN not in response.content.decode()
    assert "portal_events" not in response.content.decode()


def test_local_addresses_may_scrape_by_default(client):
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200


def test_other_addresses_are_refused_with_403(client):
    assert_forbidden(client.get("/metrics", REMOTE_ADDR="203.0.113.7"), "PORTAL_METRICS_ALLOWED_IPS")


def test_allowed_networks_may_scrape(client, settings):
    settings.PORTAL_METRICS_ALLOWED_IPS = ["10.0.0.0/8", "192.0.2.1"]
    assert client.get("/metrics", REMOTE_ADDR="10.20.30.40").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.1").status_code == 200
    assert_forbidden(client.get("/metrics", REMOTE_ADDR="192.0.2.2"), "PORTAL_METRICS_ALLOWED_IPS")
    assert_forbidden(client.get("/metrics", REMOTE_ADDR="127.0.0.1"), "PORTAL_METRICS_ALLOWED_IPS")


def test_no_address_allowed_means_token_only(client, settings):
    settings.PORTAL_METRICS_ALLOWED_IPS = []
    settings.PORTAL_METRICS_TOKEN = TOKEN
    assert_forbidden(client.get("/metrics"), "bearer token")
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_bearer_token_opens_metrics_from_any_address(client, settings):
    settings.PORTAL_METRICS_TOKEN = TOKEN
    ok = client.get("/metrics", REMOTE_ADDR="203.0.113.7", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    text_string_to_metric_families(ok.content.decode())


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN, "Bearer ", "Bearer \x00\xff"],
)
def test_wrong_tokens_are_403_without_echoing_the_token(client, settings, authorization):
    settings.PORTAL_METRICS_TOKEN = TOKEN
    response = client.get("/metrics", REMOTE_ADDR="203.0.113.7", headers={"Authorization": authorization})
    assert_forbidden(response, "")


def test_no_token_configured_means_no_token_works(client, settings):
    settings.PORTAL_METRICS_TOKEN = ""
    response = client.get("/metrics", REMOTE_ADDR="203.0.113.7", headers={"Authorization": "Bearer "})
    assert_forbidden(response, "")
    response = client.get("/metrics", REMOTE_ADDR="203.0.113.7", headers={"Authorization": "Bearer anything"})
    assert_forbidden(response, "does not match")


def test_a_request_forwarded_by_an_untrusted_proxy_is_not_local(client, settings):
    """A local reverse proxy makes every visitor look like 127.0.0.1; its X-Forwarded-For gives it away."""
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1", headers={"X-Forwarded-For": "198.51.100.9"})
    assert_forbidden(response, "PORTAL_METRICS_ALLOWED_IPS")
    settings.PORTAL_TRUSTED_PROXIES = ["127.0.0.1"]
    settings.PORTAL_METRICS_ALLOWED_IPS = ["198.51.100.0/24"]
    assert (
        client.get("/metrics", REMOTE_ADDR="127.0.0.1", headers={"X-Forwarded-For": "198.51.100.9"}).status_code == 200
    )
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1", headers={"X-Forwarded-For": "203.0.113.7"})
    assert_forbidden(response, "PORTAL_METRICS_ALLOWED_IPS")


def test_only_get_and_head(client):
    assert client.head("/metrics").status_code == 200
    assert client.post("/metrics").status_code == 405


def test_metrics_reveal_no_secrets_or_payloads(client, settings, endpoint_for):
    settings.PORTAL_METRICS_TOKEN = TOKEN
    endpoint = endpoint_for("pdk")
    make_event("pdk", "door.request.allowed", Event.Status.PROCESSED, latency=1.0)
    rule = NotificationRule.objects.create(
        name="hook", channel="webhook", url="https://example.com/h", secret="whsec_x1"
    )
    text, _ = scrape(client, Authorization=f"Bearer {TOKEN}")
    for secret in (TOKEN, endpoint.secret, rule.secret, "payload-value-never-shown", str(endpoint.pk), "example.com"):
        assert secret not in text

"""The operator's admin: write-only secrets, read-only evidence, cheap lists, reprocessing."""

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from events.models import Delivery, Endpoint, Event, RejectedRequest
from tests.vendors import PDK_SECRET, fixture_bytes, fixture_files

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(admin_client):
    return admin_client


def endpoint_form(**overrides):
    data = {
        "source": "pdk",
        "name": "Front building panels",
        "active": "on",
        "secret": "",
        "basic_username": "",
        "basic_password": "",
        "token_header": "",
        "partner_id": "",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_secret_is_never_rendered_back(operator, endpoint_for):
    endpoint = endpoint_for("pdk")
    page = operator.get(reverse("admin:events_endpoint_change", args=[endpoint.pk])).content.decode()
    assert PDK_SECRET not in page
    assert f"…{PDK_SECRET[-4:]}" in page  # recognisable, not usable
    assert endpoint.url in page


def test_blank_secret_keeps_the_stored_one_and_a_new_one_replaces_it(operator, endpoint_for):
    endpoint = endpoint_for("pdk")
    url = reverse("admin:events_endpoint_change", args=[endpoint.pk])

    response = operator.post(url, endpoint_form(name="Renamed"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    endpoint.refresh_from_db()
    assert (endpoint.name, endpoint.secret) == ("Renamed", PDK_SECRET)

    operator.post(url, endpoint_form(secret="a-brand-new-secret"))
    endpoint.refresh_from_db()
    assert endpoint.secret == "a-brand-new-secret"


def test_endpoint_without_verification_is_a_form_error(operator):
    response = operator.post(reverse("admin:events_endpoint_add"), endpoint_form())
    assert response.status_code == 200
    assert "secret" in response.context["adminform"].form.errors
    assert not Endpoint.objects.exists()


def test_unauthenticated_spk_endpoint_is_flagged_in_the_list(operator, endpoint_for):
    endpoint_for("spk", secret="", token_header="", unauthenticated=True)
    page = operator.get(reverse("admin:events_endpoint_changelist")).content.decode()
    assert "UNAUTHENTICATED" in page


@pytest.mark.parametrize("model", ["event", "delivery", "rejectedrequest"])
def test_list_query_count_does_not_grow_with_rows(operator, endpoint_for, post, model):
    endpoint = endpoint_for("pdk")
    files = fixture_files("pdk")
    url = reverse(f"admin:events_{model}_changelist")

    def queries_for_list_of(count):
        for path in files[:count]:
            post(endpoint, path.read_bytes())
            post(endpoint, b"{}", {"X-PDK-SIGNATURE": "bad"}, sign=False)
        with CaptureQueriesContext(connection) as captured:
            assert operator.get(url).status_code == 200
        return len(captured.captured_queries)

    few = queries_for_list_of(3)
    many = queries_for_list_of(40)
    assert many == few


@pytest.mark.parametrize("model", ["event", "delivery", "rejectedrequest", "endpoint"])
def test_lists_and_detail_pages_render(operator, endpoint_for, post, model):
    endpoint = endpoint_for("pdk")
    post(endpoint, fixture_bytes("pdk", "door.request.allowed.json"))
    post(endpoint, b"{}", {"X-PDK-SIGNATURE": "bad"}, sign=False)
    assert operator.get(reverse(f"admin:events_{model}_changelist")).status_code == 200
    obj = {"event": Event, "endpoint": Endpoint, "delivery": Delivery, "rejectedrequest": RejectedRequest}[model]
    page = operator.get(reverse(f"admin:events_{model}_change", args=[obj.objects.first().pk]))
    assert page.status_code == 200
    if model in ("delivery", "rejectedrequest"):
        assert "X-Pdk-Signature" in page.content.decode()  # the headers are shown


def test_events_cannot_be_edited_or_added(operator, endpoint_for, post):
    post(endpoint_for("pdk"), fixture_bytes("pdk", "door.request.allowed.json"))
    assert operator.get(reverse("admin:events_event_add")).status_code == 403
    page = operator.get(reverse("admin:events_event_change", args=[Event.objects.get().pk])).content.decode()
    assert 'name="_save"' not in page


def test_reprocess_action_is_offered_and_requeues(operator, endpoint_for, post):
    from events import processing

    event_id = post(endpoint_for("pdk"), fixture_bytes("pdk", "door.request.allowed.json")).json()["event_id"]
    processing.process(event_id)
    url = reverse("admin:events_event_changelist")
    assert 'value="reprocess"' in operator.get(url).content.decode()

    response = operator.post(url, {"action": "reprocess", "_selected_action": [event_id]}, follow=True)

    assert "queued for processing again" in response.content.decode()
    event = Event.objects.get()
    assert event.status == "pending" and event.enqueued_at is None  # the dispatcher's to publish


def test_reprocess_needs_its_permission(client, endpoint_for, post, django_user_model):
    from django.contrib.auth.models import Permission

    post(endpoint_for("pdk"), fixture_bytes("pdk", "door.request.allowed.json"))
    viewer = django_user_model.objects.create_user("viewer", password="pw-viewer-1", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_event"))
    client.force_login(viewer)
    assert 'value="reprocess"' not in client.get(reverse("admin:events_event_changelist")).content.decode()


def test_endpoints_are_deactivated_not_deleted(operator, endpoint_for):
    endpoint = endpoint_for("pdk")
    assert operator.get(reverse("admin:events_endpoint_delete", args=[endpoint.pk])).status_code == 403


def test_deactivating_an_endpoint_in_the_admin_takes_effect_at_once(operator, endpoint_for, post):
    endpoint = endpoint_for("pdk")
    body = fixture_bytes("pdk", "door.request.allowed.json")
    assert post(endpoint, body).status_code == 200  # now cached by the ingress

    operator.post(reverse("admin:events_endpoint_change", args=[endpoint.pk]), endpoint_form(active=None))

    assert post(endpoint, body).status_code == 404


def test_event_page_renders_a_payload_too_deep_to_pretty_print(operator):
    # The ingress now refuses JSON nested beyond 64 levels; an event stored before that (or by
    # other means) must still render.
    deep = json.loads("[" * 900 + "]" * 900)
    event = Event.objects.create(
        source="pdk",
        event_type="door.request.allowed",
        dedup_key="deep",
        received_at=timezone.now(),
        payload={"x": deep},
    )
    page = operator.get(reverse("admin:events_event_change", args=[event.pk]))
    assert page.status_code == 200
    assert "nested too deeply" in page.content.decode()

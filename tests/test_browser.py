"""The manager's console in a real browser (Debian's chromium through Playwright) against a live server."""

import json
import os
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse
from playwright.sync_api import expect, sync_playwright

from events import processing
from portal.models import Alarm, Lock, Site
from tests.vendors import fixture_bytes

CHROMIUM = Path("/usr/bin/chromium")
PASSWORD = "a-long-enough-passphrase-42"

# Playwright's sync API runs an event loop in this thread; the test's own ORM calls are safe here.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM.exists(), "browser tests need Debian's chromium (apt-get install chromium; .ci/run does it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    yield context.new_page()
    context.close()


@pytest.fixture
def buildings(post, endpoint_for):
    """North and South, each with a forced door (a critical alarm) from a real PDK delivery."""
    for name, panel in (("North", "1000001"), ("South", "2000002")):
        call_command("site", "add", name, stdout=open(os.devnull, "w"))  # noqa: SIM115
        call_command("site", "assign", name, "--pdk-panel", panel, stdout=open(os.devnull, "w"))  # noqa: SIM115
        payload = json.loads(fixture_bytes("pdk", "door.alarm.forced.json"))
        payload["panelId"], payload["metadata"]["doorName"] = panel, f"{name} lobby door"
        processing.process(post(endpoint_for("pdk"), json.dumps(payload).encode()).json()["event_id"])
    call_command("manager", "add", "nina", "--password", PASSWORD, "--sites", "North", stdout=open(os.devnull, "w"))  # noqa: SIM115
    return {site.name: site for site in Site.objects.all()}


def log_in(page, live_server, username="nina", password=PASSWORD):
    page.goto(live_server.url + reverse("admin:login"))
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")


def test_a_manager_acknowledges_a_critical_alarm_from_the_dashboard(page, live_server, buildings):
    log_in(page, live_server)
    page.get_by_role("link", name="critical alarms open").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(1)  # North's only: South's is not theirs
    page.locator("#result_list tbody tr input.action-select").check()
    page.select_option("select[name=action]", "acknowledge")
    page.click("button[name=index]")
    page.click("input[name=apply]")  # no note: refused, a critical alarm needs one
    expect(page.get_by_text("A note is required")).to_be_visible()
    page.fill("textarea[name=note]", "Guard on the way")
    page.click("input[name=apply]")
    expect(page.get_by_text("1 alarm(s) acknowledged")).to_be_visible()

    alarm = Alarm.objects.get(site__name="North")
    assert (alarm.state, alarm.acknowledged_by.username) == ("acknowledged", "nina")
    assert Alarm.objects.get(site__name="South").state == "active"


def test_a_manager_opens_their_door_but_not_another_sites(page, live_server, buildings):
    log_in(page, live_server)
    north, south = Lock.objects.get(site__name="North"), Lock.objects.get(site__name="South")
    page.goto(live_server.url + reverse("admin:portal_lock_change", args=[north.pk]))
    expect(page.get_by_text("North lobby door").first).to_be_visible()
    expect(page.get_by_text("alarm: door_forced")).to_be_visible()  # the timeline
    response = page.goto(live_server.url + reverse("admin:portal_lock_change", args=[south.pk]))
    assert response.status == 404


def test_the_dashboard_fits_a_tablet(browser, live_server, buildings):
    context = browser.new_context(viewport={"width": 768, "height": 1024})
    page = context.new_page()
    log_in(page, live_server)
    expect(page.get_by_role("link", name="doors and locks offline")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 768
    context.close()


def test_repeated_wrong_passwords_lock_the_manager_out(page, live_server, buildings, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        log_in(page, live_server, password="wrong")
    log_in(page, live_server)
    expect(page.get_by_text("locked", exact=False).first).to_be_visible()
    assert page.url.rstrip("/").endswith(reverse("admin:login").rstrip("/"))

"""The command-line tools an integrator scripts with: endpoints, fixtures, replays."""

import io
import re

import pytest
from django.core.management import CommandError, call_command

from events.models import Endpoint, Event
from tests.vendors import PDK_SECRET, SEAM_SECRET, SPK_TOKEN

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--source", "pdk", "--secret", PDK_SECRET], {"secret": PDK_SECRET}),
        (
            ["--source", "pdk", "--secret", PDK_SECRET, "--basic", "hooks:p4ss"],
            {"basic_username": "hooks", "basic_password": "p4ss"},
        ),
        (["--source", "pdk", "--basic", "hooks:p4ss"], {"secret": "", "basic_username": "hooks"}),
        (["--source", "seam", "--secret", SEAM_SECRET], {"secret": SEAM_SECRET}),
        (["--source", "spk", "--header", "X-Api-Key", "--token", SPK_TOKEN], {"token_header": "X-Api-Key"}),
        (
            ["--source", "spk", "--bearer", SPK_TOKEN, "--partner-id", "acme"],
            {"token_header": "", "partner_id": "acme"},
        ),
        (["--source", "spk", "--no-auth"], {"unauthenticated": True, "secret": ""}),
    ],
)
def test_add_endpoint_prints_its_path_last(args, expected):
    output = run("webhook_endpoint", "add", *args)

    path = output.strip().splitlines()[-1]
    match = re.fullmatch(r"/webhooks/(pdk|spk|seam)/([0-9a-f-]{36})/", path)
    assert match, output
    endpoint = Endpoint.objects.get(pk=match.group(2))
    assert endpoint.source == match.group(1) and endpoint.active
    for field, value in expected.items():
        assert getattr(endpoint, field) == value


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "pdk"], "secret"),
        (["--source", "seam", "--secret", "not-whsec"], "whsec_"),
        (["--source", "spk"], "token"),
        (["--source", "spk", "--no-auth", "--bearer", "x"], "either"),
        (["--source", "spk", "--header", "X-Api-Key"], "--token"),
        (["--source", "spk", "--header", "Bad Header", "--token", "t"], "header name"),
        (["--source", "pdk", "--basic", "nopassword"], "USER:PASSWORD"),
        (["--source", "pdk", "--secret", "s", "--partner-id", "x"], "SmartphoneKey"),
        (["--source", "seam", "--secret", SEAM_SECRET, "--site", "Nowhere"], "Nowhere"),
    ],
)
def test_add_endpoint_refuses_bad_input_with_a_message(args, message):
    with pytest.raises(CommandError, match=message):
        run("webhook_endpoint", "add", *args)
    assert not Endpoint.objects.exists()


def test_list_never_shows_secrets():
    run("webhook_endpoint", "add", "--source", "pdk", "--secret", PDK_SECRET, "--basic", "hooks:p4ssw0rd-x")
    run("webhook_endpoint", "add", "--source", "spk", "--bearer", SPK_TOKEN)
    run("webhook_endpoint", "add", "--source", "spk", "--no-auth", "--name", "Open door")

    listing = run("webhook_endpoint", "list")

    assert PDK_SECRET not in listing and SPK_TOKEN not in listing and "p4ssw0rd-x" not in listing
    assert listing.count("/webhooks/") == 3
    assert "UNAUTHENTICATED" in listing


def test_replay_needs_a_selection():
    with pytest.raises(CommandError, match="Say what to replay"):
        run("replay_events")


def test_replay_dry_run_counts(post, endpoint_for):
    from tests.vendors import fixture_bytes

    post(endpoint_for("pdk"), fixture_bytes("pdk", "door.request.allowed.json"))
    assert "1 events would be replayed" in run("replay_events", "--source", "pdk", "--dry-run")
    assert "0 events" in run("replay_events", "--failed", "--dry-run")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("vendor", ["pdk", "spk", "seam"])
def test_send_fixture_signs_like_the_vendor_and_posts(live_server, vendor):
    from tests.helpers import make_endpoint
    from tests.vendors import fixture_files

    endpoint = make_endpoint(vendor)
    path = fixture_files(vendor)[0]

    output = run("send_fixture", str(path), "--endpoint", str(endpoint.pk), "--url", live_server.url)

    assert "-> 200" in output
    assert Event.objects.filter(source=vendor).count() == 1


def test_send_fixture_reports_an_unknown_endpoint():
    with pytest.raises(CommandError, match="No endpoint"):
        run("send_fixture", "tests/fixtures/pdk/door.request.allowed.json", "--endpoint", "nope")


def test_send_fixture_refuses_a_file_that_is_not_utf8(tmp_path, endpoint_for):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"event_id": "\xff"}')
    with pytest.raises(CommandError, match="not UTF-8"):
        run("send_fixture", str(bad), "--endpoint", str(endpoint_for("seam").pk))


def test_replay_names_ids_that_do_not_exist():
    err = io.StringIO()
    call_command("replay_events", "--ids", "424242", stdout=io.StringIO(), stderr=err)
    assert "No events with ids 424242" in err.getvalue()

"""One security contract every vendor's ingress honours, plus each vendor's own rules."""

import base64
import json
import time
import uuid

import pytest

from events.models import Delivery, Event, RejectedRequest
from tests.vendors import (
    PDK_SECRET,
    SEAM_SECRET,
    SPK_TOKEN,
    fixture_bytes,
    pdk_headers,
    seam_headers,
    seam_signature,
    spk_headers,
    with_changes,
)

pytestmark = pytest.mark.django_db


class SecurityContract:
    """Inherited by each vendor's tests: what must never become an event."""

    source: str
    sample: tuple[str, str]
    signs_body = True  # SPK sends a static token, not a signature of the body

    def good_headers(self, body: bytes) -> dict:
        raise NotImplementedError

    def wrong_secret_headers(self, body: bytes) -> dict:
        raise NotImplementedError

    def body(self) -> bytes:
        return fixture_bytes(*self.sample)

    def assert_rejected(self, response, status=401):
        assert response.status_code == status, response.content
        assert response["Content-Type"] == "application/json"
        assert response.json()["detail"]
        assert not Event.objects.exists() and not Delivery.objects.exists()

    def test_valid_signature_is_accepted(self, post, endpoint_for):
        response = post(endpoint_for(self.source), self.body(), self.good_headers(self.body()), sign=False)
        assert response.status_code == 200

    def test_missing_signature_is_401(self, post, endpoint_for):
        self.assert_rejected(post(endpoint_for(self.source), self.body(), sign=False))

    def test_signature_of_another_body_is_401(self, post, endpoint_for):
        if not self.signs_body:
            pytest.skip(f"{self.source} does not sign bodies")
        other = with_changes(self.body(), tampered=True)
        self.assert_rejected(post(endpoint_for(self.source), self.body(), self.good_headers(other), sign=False))

    def test_wrong_secret_is_401(self, post, endpoint_for):
        headers = self.wrong_secret_headers(self.body())
        self.assert_rejected(post(endpoint_for(self.source), self.body(), headers, sign=False))

    def test_rejection_is_recorded_without_secrets(self, post, endpoint_for):
        endpoint = endpoint_for(self.source)
        post(endpoint, self.body(), self.wrong_secret_headers(self.body()), sign=False)
        record = RejectedRequest.objects.get()
        assert (record.endpoint, record.status_code, record.remote_addr) == (endpoint, 401, "127.0.0.1")
        assert endpoint.secret not in json.dumps(record.headers) + record.reason

    def test_inactive_endpoint_is_404(self, post, endpoint_for):
        endpoint = endpoint_for(self.source, active=False)
        self.assert_rejected(post(endpoint, self.body(), self.good_headers(self.body()), sign=False), 404)

    def test_unknown_endpoint_is_404(self, post, endpoint_for):
        endpoint = endpoint_for(self.source)
        path = f"/webhooks/{self.source}/{uuid.uuid4()}/"
        self.assert_rejected(post(endpoint, self.body(), self.good_headers(self.body()), path=path), 404)

    def test_endpoint_of_another_source_is_404(self, post, endpoint_for):
        endpoint = endpoint_for(self.source)
        other = next(s for s in ("pdk", "spk", "seam") if s != self.source)
        path = f"/webhooks/{other}/{endpoint.pk}/"
        self.assert_rejected(post(endpoint, self.body(), self.good_headers(self.body()), path=path), 404)

    def test_endpoint_without_verification_rejects_everything(self, post, endpoint_for):
        endpoint = endpoint_for(self.source)
        type(endpoint).objects.filter(pk=endpoint.pk).update(secret="", basic_username="", basic_password="")
        self.assert_rejected(post(endpoint, self.body(), self.good_headers(self.body()), sign=False))


class TestPdkSecurity(SecurityContract):
    source = "pdk"
    sample = ("pdk", "door.request.allowed.json")

    def good_headers(self, body):
        return pdk_headers(body)

    def wrong_secret_headers(self, body):
        return pdk_headers(body, secret="not-" + PDK_SECRET)

    def test_uppercase_hex_signature_is_accepted(self, post, endpoint_for):
        headers = {"X-PDK-SIGNATURE": pdk_headers(self.body())["X-PDK-SIGNATURE"].upper()}
        assert post(endpoint_for("pdk"), self.body(), headers, sign=False).status_code == 200

    def test_basic_credentials_must_match_when_configured(self, post, endpoint_for):
        endpoint = endpoint_for("pdk", basic_username="pdk", basic_password="door-pass")
        body = self.body()

        def basic(user, password):
            return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

        assert post(endpoint, body, {"Authorization": basic("pdk", "door-pass")}).status_code == 200
        assert post(endpoint, body).status_code == 401
        assert post(endpoint, body, {"Authorization": basic("pdk", "wrong")}).status_code == 401
        assert post(endpoint, body, {"Authorization": basic("other", "door-pass")}).status_code == 401
        assert post(endpoint, body, {"Authorization": "Basic !!!not-base64"}).status_code == 401
        assert post(endpoint, body, {"Authorization": "Bearer x"}).status_code == 401


class TestSeamSecurity(SecurityContract):
    source = "seam"
    sample = ("seam", "lock.unlocked.json")

    def good_headers(self, body):
        return seam_headers(body)

    def wrong_secret_headers(self, body):
        return seam_headers(body, secret="whsec_" + base64.b64encode(b"another-key").decode())

    def test_standard_webhooks_header_names_are_accepted(self, post, endpoint_for):
        headers = seam_headers(self.body(), prefix="webhook")
        assert post(endpoint_for("seam"), self.body(), headers, sign=False).status_code == 200

    @pytest.mark.parametrize("skew", [-6 * 60, 6 * 60])
    def test_timestamp_outside_five_minutes_is_401(self, post, endpoint_for, skew):
        headers = seam_headers(self.body(), timestamp=int(time.time()) + skew)
        self.assert_rejected(post(endpoint_for("seam"), self.body(), headers, sign=False))

    def test_timestamp_within_five_minutes_is_accepted(self, post, endpoint_for):
        headers = seam_headers(self.body(), timestamp=int(time.time()) - 4 * 60)
        assert post(endpoint_for("seam"), self.body(), headers, sign=False).status_code == 200

    @pytest.mark.parametrize(
        "signature",
        ["garbage", "v1", "v1,not base64!!", "v1,a,b", "", " ", "v1,", "v2,abc"],
    )
    def test_malformed_signature_header_is_401_not_500(self, post, endpoint_for, signature):
        headers = {**seam_headers(self.body()), "svix-signature": signature}
        self.assert_rejected(post(endpoint_for("seam"), self.body(), headers, sign=False))

    def test_non_numeric_timestamp_is_401(self, post, endpoint_for):
        headers = {**seam_headers(self.body()), "svix-timestamp": "yesterday"}
        self.assert_rejected(post(endpoint_for("seam"), self.body(), headers, sign=False))

    def test_any_of_several_signatures_may_match_during_key_rotation(self, post, endpoint_for):
        body = self.body()
        headers = seam_headers(body)
        old_key = "whsec_" + base64.b64encode(b"the-previous-key").decode()
        stale = seam_signature(old_key, headers["svix-id"], int(headers["svix-timestamp"]), body)
        headers["svix-signature"] = f"{stale} {headers['svix-signature']}"
        assert post(endpoint_for("seam"), body, headers, sign=False).status_code == 200

    def test_body_that_is_not_utf8_is_400_naming_the_encoding(self, post, endpoint_for):
        body = b'{"event_id": "\xff\xfe"}'
        response = post(endpoint_for("seam"), body, seam_headers(body), sign=False)
        self.assert_rejected(response, 400)
        assert "UTF-8" in response.json()["detail"]

    def test_one_malformed_entry_does_not_hide_a_valid_signature(self, post, endpoint_for):
        headers = seam_headers(self.body())
        headers["svix-signature"] = f"garbage v2,xx   v1,AAA {headers['svix-signature']}"
        assert post(endpoint_for("seam"), self.body(), headers, sign=False).status_code == 200

    def test_endpoint_rejects_a_secret_that_is_not_whsec(self, endpoint_for):
        from django.core.exceptions import ValidationError

        for secret in ("plain", "whsec_***", "whsec_"):
            with pytest.raises(ValidationError):
                endpoint_for("seam", secret=secret)
        assert endpoint_for("seam", secret=SEAM_SECRET)


class TestSpkSecurity(SecurityContract):
    source = "spk"
    sample = ("spk", "ResidentAdded.json")
    signs_body = False

    def good_headers(self, body):
        return spk_headers(body)

    def wrong_secret_headers(self, body):
        return spk_headers(body, token="not-" + SPK_TOKEN)

    def test_wrong_partner_id_is_401(self, post, endpoint_for):
        envelope = json.loads(self.body())
        envelope["detail"]["partnerId"] = "someone-else"
        self.assert_rejected(post(endpoint_for("spk"), json.dumps(envelope).encode()))

    def test_missing_partner_id_is_401_when_one_is_required(self, post, endpoint_for):
        envelope = json.loads(self.body())
        del envelope["detail"]["partnerId"]
        self.assert_rejected(post(endpoint_for("spk"), json.dumps(envelope).encode()))

    def test_bearer_token_mode(self, post, endpoint_for):
        endpoint = endpoint_for("spk", token_header="")
        body = self.body()
        assert post(endpoint, body, {"Authorization": f"Bearer {SPK_TOKEN}"}, sign=False).status_code == 200
        assert post(endpoint, body, {"Authorization": "Bearer nope"}, sign=False).status_code == 401
        assert post(endpoint, body, {"X-Api-Key": SPK_TOKEN}, sign=False).status_code == 401

    def test_explicitly_unauthenticated_endpoint_accepts_without_token(self, post, endpoint_for):
        endpoint = endpoint_for("spk", secret="", token_header="", unauthenticated=True)
        assert post(endpoint, self.body(), sign=False).status_code == 200

    def test_unauthenticated_endpoint_still_checks_partner(self, post, endpoint_for):
        endpoint = endpoint_for("spk", secret="", token_header="", unauthenticated=True)
        envelope = json.loads(self.body())
        envelope["detail"]["partnerId"] = "someone-else"
        self.assert_rejected(post(endpoint, json.dumps(envelope).encode(), sign=False))

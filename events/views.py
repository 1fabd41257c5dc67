"""The webhook ingress: one DRF view for every vendor; vendor specifics live in events.sources."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import DatabaseError, DataError, InterfaceError, OperationalError
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler

from events import sources, store
from events.sources.base import AuthenticationFailed, Inbound, InvalidPayload

log = logging.getLogger(__name__)


def problem(status_code: int, error: str, detail: str, **headers: str) -> Response:
    return Response({"error": error, "detail": detail}, status=status_code, headers=headers or None)


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    # No Content-Type at all is read as JSON: the body is checked either way.
    return media_type in ("", "application/json") or media_type.endswith("+json")


class AnswerInJson(BaseContentNegotiation):
    """Vendors' Accept headers are whatever their HTTP client sends; the answer is JSON regardless.
    (DRF's default would refuse a delivery with a 406, and SPK drops an event for good on a 4xx.)"""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type

    def select_parser(self, request, parsers):
        return None  # the body is read raw by the vendor module


class WebhookIngressView(APIView):
    """Authenticate, identify and store one delivery; answer 2xx only once it is committed."""

    http_method_names = ["post"]
    authentication_classes: list = []
    permission_classes: list = []
    parser_classes: list = []
    content_negotiation_class = AnswerInJson

    def post(self, request, source: str, endpoint_id: str) -> Response:
        module = sources.get(source)
        endpoint = store.find_endpoint(endpoint_id) if module else None
        if endpoint is None or not endpoint.active or endpoint.source != source:
            return problem(404, "unknown_endpoint", "No active endpoint for this source at this URL.")

        remote_addr = store.client_address(request.META)

        def refuse(status_code: int, error: str, detail: str) -> Response:
            store.record_rejection(endpoint, request.headers, remote_addr, status_code, detail)
            return problem(status_code, error, detail)

        content_type = request.META.get("CONTENT_TYPE", "")
        if not _is_json(content_type):
            return refuse(415, "unsupported_media_type", f"Content-Type {content_type[:100]!r} is not JSON.")
        limit = settings.PORTAL_MAX_BODY_BYTES
        body = _read_body(request, limit)
        if body is None:
            return refuse(413, "body_too_large", f"The body is over the {limit}-byte limit.")
        inbound = Inbound(headers=request.headers, body=body)

        try:
            module.authenticate(inbound, endpoint)
            identified = module.identify(inbound)
        except AuthenticationFailed as exc:
            return refuse(401, "authentication_failed", str(exc))
        except InvalidPayload as exc:
            return refuse(400, "invalid_payload", str(exc))

        try:
            stored = store.record_delivery(endpoint, inbound, identified, remote_addr)
        except DataError:
            # The database refused a value the checks above let through: a retry can't help.
            log.exception("unstorable payload on endpoint %s", endpoint.pk)
            return refuse(400, "invalid_payload", "The payload holds a value the database cannot store.")
        return Response(
            {"status": "accepted", "event_id": stored.event_id, "duplicate": stored.duplicate},
            status=status.HTTP_200_OK,
        )


def _read_body(request, limit: int) -> bytes | None:
    """The raw body, or None when it is over the limit.

    A chunked request has no Content-Length, and Django then reads nothing; the WSGI server
    (gunicorn) de-chunks, so such a body is read from the WSGI stream, up to the limit.
    """
    meta = request.META
    if "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower() and not meta.get("CONTENT_LENGTH"):
        body = meta["wsgi.input"].read(limit + 1)
        return None if len(body) > limit else body
    declared = meta.get("CONTENT_LENGTH") or "0"
    if not declared.isdigit() or int(declared) > limit:
        return None
    body = request.body
    return None if len(body) > limit else body


def json_exception_handler(exc, context):
    """DRF's handler, plus: a database that can't store the delivery is a 503 the vendor retries.

    Unavailability (OperationalError, InterfaceError) is expected and logged briefly; any other
    database error is a deployment problem or a bug, logged in full, and still a 503 because a
    retry after the fix will succeed.
    """
    if isinstance(exc, (OperationalError, InterfaceError)):
        log.warning("database unavailable while handling a webhook: %s", exc.__class__.__name__)
        return problem(503, "database_unavailable", "Storage is unavailable; retry later.", **{"Retry-After": "30"})
    if isinstance(exc, DatabaseError) and not isinstance(exc, DataError):
        log.error("database error while handling a webhook", exc_info=exc)
        return problem(503, "database_unavailable", "Storage is unavailable; retry later.", **{"Retry-After": "30"})
    response = exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"error": getattr(exc, "default_code", "error"), "detail": str(response.data["detail"])}
    return response


@csrf_exempt
def unknown_webhook_url(request, *args, **kwargs):
    """Anything under /webhooks/ that is not an endpoint URL: a JSON 404, like the rest of the ingress."""
    return JsonResponse(
        {"error": "unknown_endpoint", "detail": "Webhook URLs look like /webhooks/<source>/<endpoint-id>/."},
        status=404,
    )

"""Ingress routes: /webhooks/<source>/<endpoint-id>/."""

from django.urls import path, re_path, register_converter

from events.views import WebhookIngressView, unknown_webhook_url


class EndpointIdConverter:
    """An endpoint's UUID as vendors may paste it: any case, with or without dashes."""

    regex = "[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"

    def to_python(self, value: str) -> str:
        return value.lower().replace("-", "")

    def to_url(self, value) -> str:
        return str(value)


register_converter(EndpointIdConverter, "endpoint_id")

urlpatterns = [
    path("<slug:source>/<endpoint_id:endpoint_id>/", WebhookIngressView.as_view(), name="webhook-ingress"),
    # Some senders drop the trailing slash; a redirect would turn their POST into a lost event.
    path("<slug:source>/<endpoint_id:endpoint_id>", WebhookIngressView.as_view()),
    re_path(r"", unknown_webhook_url),
]

"""Ingress routes: /webhooks/<source>/<endpoint-id>/."""

from django.urls import path, re_path

from events.views import WebhookIngressView, unknown_webhook_url

urlpatterns = [
    path("<slug:source>/<uuid:endpoint_id>/", WebhookIngressView.as_view(), name="webhook-ingress"),
    re_path(r"", unknown_webhook_url),
]

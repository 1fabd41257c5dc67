"""Ingress routes: /webhooks/<source>/<endpoint-id>/."""

from django.urls import path

from events.views import WebhookIngressView

urlpatterns = [
    path("<slug:source>/<uuid:endpoint_id>/", WebhookIngressView.as_view(), name="webhook-ingress"),
]

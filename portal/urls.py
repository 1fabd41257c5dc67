"""Top-level URL routes: admin, probes, metrics and the webhook ingress."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from portal import health, metrics

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("webhooks/", include("events.urls")),
    path("admin/", admin.site.urls),
]

if settings.PORTAL_BENCHMARK_VIEWS:
    from portal.bench import BareView

    urlpatterns.append(path("bench/bare/", BareView.as_view()))

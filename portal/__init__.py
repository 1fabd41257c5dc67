"""The portal project package: settings, the Celery app and the building domain."""

from portal.celery import app as celery_app

__all__ = ["celery_app"]

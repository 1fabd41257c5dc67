"""Deployment checks: `manage.py check --deploy` names quick-start defaults left in production."""

from django.conf import settings
from django.core.checks import Warning, register

DEV_SECRET_KEY = "dev-only-insecure-key-change-me"


@register(deploy=True)
def quick_start_defaults(app_configs, **kwargs):
    problems = []
    if settings.SECRET_KEY == DEV_SECRET_KEY:
        problems.append(Warning("SECRET_KEY is the public quick-start key.", hint="Set SECRET_KEY.", id="portal.W001"))
    if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        problems.append(
            Warning(
                "The database is the quick-start SQLite file.", hint="Set DATABASE_URL=postgres://…", id="portal.W002"
            )
        )
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        problems.append(
            Warning(
                "The broker is the quick-start filesystem queue.",
                hint="Set CELERY_BROKER_URL=redis://…",
                id="portal.W003",
            )
        )
    return problems

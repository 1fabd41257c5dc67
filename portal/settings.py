"""All configuration, read from the environment (see .env.example for every variable)."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Local state of the quick start: the SQLite file, the filesystem broker's queue, static files.
VAR_DIR = Path(env("PORTAL_VAR_DIR", default=str(BASE_DIR / "var")))

SECRET_KEY = env("SECRET_KEY", default="dev-only-insecure-key-change-me")  # see portal/checks.py
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# The public base URL vendors reach the portal at (used in printed webhook URLs).
PORTAL_PUBLIC_URL = env("PORTAL_PUBLIC_URL", default="http://127.0.0.1:8000").rstrip("/")
# Largest webhook body accepted; SPK (EventBridge) events may be up to 1 MB.
PORTAL_MAX_BODY_BYTES = env.int("PORTAL_MAX_BODY_BYTES", default=1024 * 1024)
# Raw deliveries and rejected-request records older than this are pruned by beat.
PORTAL_RETENTION_DAYS = env.int("PORTAL_RETENTION_DAYS", default=30)
# Beat publishes pending events nobody published after this long (dispatcher or broker down) ...
PORTAL_REQUEUE_AFTER_SECONDS = env.int("PORTAL_REQUEUE_AFTER_SECONDS", default=60)
# ... and publishes again events whose task was sent this long ago and never ran (the message was
# lost, e.g. with a Redis restart). Longer than a backlog normally takes to drain.
PORTAL_REPUBLISH_AFTER_SECONDS = env.int("PORTAL_REPUBLISH_AFTER_SECONDS", default=900)
# How often beat looks for such events (the default of its schedule, editable in the admin).
PORTAL_REQUEUE_EVERY_SECONDS = env.float("PORTAL_REQUEUE_EVERY_SECONDS", default=30)
# How often the dispatcher looks for newly committed events.
PORTAL_DISPATCH_INTERVAL_SECONDS = env.float("PORTAL_DISPATCH_INTERVAL_SECONDS", default=0.2)
# Events per processing task: one commit per task, so larger batches drain a backlog faster.
PORTAL_PROCESS_BATCH = env.int("PORTAL_PROCESS_BATCH", default=50)
# Reverse proxies whose X-Forwarded-For names the real sender (recorded on deliveries).
PORTAL_TRUSTED_PROXIES = env.list("PORTAL_TRUSTED_PROXIES", default=[])
# Endpoint settings are cached per process for this long on the ingress hot path.
PORTAL_ENDPOINT_CACHE_SECONDS = env.float("PORTAL_ENDPOINT_CACHE_SECONDS", default=5.0)

# Routes the bare baseline view the ingest benchmark compares against; off in production.
PORTAL_BENCHMARK_VIEWS = env.bool("PORTAL_BENCHMARK_VIEWS", default=False)
# GET /metrics (Prometheus): allowed with "Authorization: Bearer <PORTAL_METRICS_TOKEN>" (unset: no token
# works) or from these addresses or networks (e.g. 10.0.0.0/8); anything else gets 403.
PORTAL_METRICS_TOKEN = env("PORTAL_METRICS_TOKEN", default="")
PORTAL_METRICS_ALLOWED_IPS = env.list("PORTAL_METRICS_ALLOWED_IPS", default=["127.0.0.1", "::1"])

INSTALLED_APPS = [
    "portal.admin_site.PortalAdminConfig",  # django.contrib.admin with the dashboard
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_celery_beat",
    "axes",
    "portal",
    "events",
    "subscriptions",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes requires
]

# Failed logins lock the account from that address out for a while (django-axes).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_HOURS", default=1.0)  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'portal.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
# Off: a health check is a round trip on every request. A connection that died is reported as a
# 503 (the vendor retries) and replaced by the next request.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("CONN_HEALTH_CHECKS", default=False)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A database that does not answer must become a quick 503, not a hung request.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=1)
    )
    # Prepared statements: the statements run on every event (the same few dozen) are parsed and
    # planned once per connection instead of every time, which takes a third off PostgreSQL's CPU
    # per event. Needs server-side parameter binding. Like the ingress's own prepared statement, it
    # needs PostgreSQL directly or a pooler that keeps them (README, Running in production).
    if env.bool("DATABASE_PREPARED_STATEMENTS", default=True):
        DATABASES["default"]["OPTIONS"].setdefault("server_side_binding", True)
        DATABASES["default"]["OPTIONS"].setdefault("prepare_threshold", env.int("DATABASE_PREPARE_AFTER", default=2))
else:
    # SQLite: wait for the writer lock instead of failing under concurrent requests.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("timeout", 20)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env("STATIC_ROOT", default=str(VAR_DIR / "static"))
Path(STATIC_ROOT).mkdir(parents=True, exist_ok=True)  # collectstatic fills it in production
# WhiteNoise serves the admin's static files from the app itself, under gunicorn too.
WHITENOISE_USE_FINDERS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Admin sessions end after this many seconds (a working day) whatever the activity.
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_TLS_PROXY", default=False) else None
# The ingress reads the body itself against PORTAL_MAX_BODY_BYTES; keep Django's own cap above it.
DATA_UPLOAD_MAX_MEMORY_SIZE = PORTAL_MAX_BODY_BYTES + 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "events.views.json_exception_handler",
}

# The shared cache (PDK API tokens live here so every worker uses one token): Redis in production
# (CACHE_URL, or REDIS_URL when CACHE_URL is unset; django's built-in RedisCache), else per-process memory.
CACHES = {"default": env.cache("CACHE_URL", default=env("REDIS_URL", default="") or "locmemcache://")}

# PDK subscriptions (subscriptions app): how long a rotated-out secret stays valid at the ingress,
# how often beat reconciles every connection, and the API client's limits.
PORTAL_PDK_SUBSCRIPTION_OVERLAP_HOURS = env.float("PORTAL_PDK_SUBSCRIPTION_OVERLAP_HOURS", default=24)
PORTAL_PDK_RECONCILE_MINUTES = env.float("PORTAL_PDK_RECONCILE_MINUTES", default=10)
PORTAL_PDK_TIMEOUT_SECONDS = env.float("PORTAL_PDK_TIMEOUT_SECONDS", default=10)
PORTAL_PDK_MAX_ATTEMPTS = env.int("PORTAL_PDK_MAX_ATTEMPTS", default=4)
PORTAL_PDK_MAX_BACKOFF_SECONDS = env.float("PORTAL_PDK_MAX_BACKOFF_SECONDS", default=30)

# Notifications (subscriptions app). Email goes through Django's email backend: EMAIL_URL
# (smtp://user:password@host:587 with ?tls=True, or consolemail:// / dummymail://); the quick start
# prints emails on the console.
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="portal@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# Seconds between the tries of one notification after the first (Svix's schedule); dead after the last.
PORTAL_NOTIFY_RETRY_SCHEDULE = [
    float(s)
    for s in env.list("PORTAL_NOTIFY_RETRY_SCHEDULE", default=["5", "300", "1800", "7200", "18000", "36000", "36000"])
]
# A flapping alarm notifies each rule at most once per window; the next message carries the count.
PORTAL_NOTIFY_STORM_WINDOW_SECONDS = env.float("PORTAL_NOTIFY_STORM_WINDOW_SECONDS", default=600)
# A webhook that has failed without a success for this long is disabled and its rule's owner emailed.
PORTAL_NOTIFY_DISABLE_AFTER_DAYS = env.float("PORTAL_NOTIFY_DISABLE_AFTER_DAYS", default=5)
PORTAL_NOTIFY_WEBHOOK_TIMEOUT_SECONDS = env.float("PORTAL_NOTIFY_WEBHOOK_TIMEOUT_SECONDS", default=10)
# Sends one webhook rule may have in flight at once: a slow receiver holds at most this many of the
# notification worker's threads; its other messages wait a second and try again.
PORTAL_NOTIFY_MAX_IN_FLIGHT_PER_RULE = env.int("PORTAL_NOTIFY_MAX_IN_FLIGHT_PER_RULE", default=4)
# How often beat sends the notifications that are due (retries, storm summaries) and the reminders.
PORTAL_NOTIFY_SWEEP_SECONDS = env.float("PORTAL_NOTIFY_SWEEP_SECONDS", default=5)

# Celery: the quick start uses kombu's filesystem transport (no server); production uses Redis.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://localhost//")  # a host, or kombu warns
CELERY_BROKER_TRANSPORT_OPTIONS = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = VAR_DIR / "broker"
    (_queue_dir / "processed").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "processed_folder": str(_queue_dir / "processed"),
        "control_folder": str(_queue_dir / "control"),
        "store_processed": False,
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # A task acknowledged late is redelivered after this if its worker vanished.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
        "socket_connect_timeout": 1,
        "socket_timeout": 5,
    }
CELERY_TASK_IGNORE_RESULT = True
# Sends wait on other people's servers: they have their own queue, served by a thread-pool worker
# (Procfile: notifier), so a slow receiver never holds up event processing.
CELERY_TASK_ROUTES = {"subscriptions.tasks.deliver_notification": {"queue": "notifications"}}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int("CELERY_WORKER_PREFETCH_MULTIPLIER", default=4)
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = TIME_ZONE
# Celery closes Django's database connections around every task unless told to reuse them; a
# new PostgreSQL connection per task costs more than the task.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
}

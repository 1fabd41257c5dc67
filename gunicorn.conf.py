"""Gunicorn settings, each overridable from the environment."""

import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
# Sync workers spend much of a request waiting for the database commit: four per core.
workers = int(os.environ.get("WEB_CONCURRENCY", str(4 * (os.cpu_count() or 1))))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
# Vendors give up after 5-15 s; never hold a request longer than that.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "20"))
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
# The proxy in front (if any): trusted for X-Forwarded-Proto (see also PORTAL_TRUSTED_PROXIES).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

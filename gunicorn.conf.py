"""Gunicorn settings, each overridable from the environment."""

import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
# Sync workers spend much of a request waiting for the database commit: four per core.
workers = int(os.environ.get("WEB_CONCURRENCY", str(4 * (os.cpu_count() or 1))))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
# A worker silent this long is killed and restarted. Vendors give up after 5 s (SPK) to 15 s
# (Seam), so nothing a vendor waits for can legitimately take longer.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "15"))
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
# The proxy in front (if any): trusted for X-Forwarded-Proto (see also PORTAL_TRUSTED_PROXIES).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

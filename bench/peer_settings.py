"""Settings for the django-post-office peer of the dispatch benchmark (Baseline B).

EDM's settings plus ``post_office``, on a database of its own on the same PostgreSQL
server (``<EDM database name>_peer``, created by ``bench/peer_post_office.py`` when
missing), sending through Django's SMTP backend to the benchmark's sink
(``PEER_SMTP_PORT``). The ``POST_OFFICE`` options are the ones its README documents for
bulk sending; the benchmark passes their values through the environment.
"""

from __future__ import annotations

import os

from edm.settings import *  # noqa: F403
from edm.settings import DATABASES, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "post_office"]

DATABASES = {
    **DATABASES,
    "default": {**DATABASES["default"], "NAME": f"{DATABASES['default']['NAME']}_peer"},
}

EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = os.environ.get("PEER_SMTP_HOST", "127.0.0.1")
EMAIL_PORT = int(os.environ.get("PEER_SMTP_PORT", "25"))
EMAIL_USE_TLS = False
EMAIL_USE_SSL = False
EMAIL_HOST_USER = ""
EMAIL_HOST_PASSWORD = ""

POST_OFFICE = {
    # Emails fetched per send_queued() round; each round is split across the processes.
    "BATCH_SIZE": int(os.environ.get("PEER_BATCH_SIZE", "5000")),
    "THREADS_PER_PROCESS": int(os.environ.get("PEER_THREADS_PER_PROCESS", "4")),
    # 1: a Log row for failures only (2, the default, also writes one per sent email).
    "LOG_LEVEL": int(os.environ.get("PEER_LOG_LEVEL", "1")),
    "BATCH_DELIVERY_TIMEOUT": 3600,
    "LOCK_FILE_NAME": os.environ.get("PEER_LOCK_FILE_NAME", "edm_bench_post_office"),
}

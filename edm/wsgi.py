"""WSGI entry point (gunicorn edm.wsgi)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

from edm.env import bootstrap_settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "edm.settings")
bootstrap_settings()
application = get_wsgi_application()

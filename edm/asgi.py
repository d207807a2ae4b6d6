"""ASGI entry point."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from edm.env import bootstrap_settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "edm.settings")
bootstrap_settings()
application = get_asgi_application()

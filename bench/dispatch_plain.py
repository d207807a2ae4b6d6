#!/usr/bin/env python
"""``manage.py dispatch`` with the deliverability additions switched off — no
List-Unsubscribe headers, no unsubscribe footer, no tracking, no DKIM — for the
benchmark's side-by-side "off" runs (``bench_dispatch.py --part deliverability``).
Bench-only: the product always sends bulk mail with its unsubscribe headers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "edm.settings")

import django  # noqa: E402

django.setup()

from django.core.management import execute_from_command_line  # noqa: E402

from apps.deliverability import sending  # noqa: E402
from apps.dispatch.engine import worker  # noqa: E402
from apps.dispatch.models import Task  # noqa: E402
from apps.dispatch.templates import CompiledTask  # noqa: E402


def _plain(task_id: int) -> CompiledTask:
    row = (
        Task.objects.filter(pk=task_id)
        .values("subject", "body_text", "body_html", "from_name")
        .get()
    )
    return CompiledTask.compile(**row)


worker.compile_task = _plain
sending.sign_message = lambda message, **_: message
execute_from_command_line([str(ROOT / "manage.py"), "dispatch"])

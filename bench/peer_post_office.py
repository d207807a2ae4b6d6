#!/usr/bin/env python
"""django-post-office steps of the dispatch benchmark, run in their own process.

Run by ``bench/baselines.py`` (``run_post_office``) with ``bench.peer_settings``::

    python bench/peer_post_office.py queue --n 100000 --seed 1
    python bench/peer_post_office.py send --processes 2

``queue`` creates the peer database if missing, migrates it, empties post_office's
tables, stores the benchmark's template as an ``EmailTemplate`` and queues one email per
recipient with ``mail.send_many()`` (rendered at queue time, post_office's default).
``send`` runs ``send_queued_mail_until_done()`` — what ``manage.py send_queued_mail
--processes N`` runs — and times it. Each step prints one ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_NAME = "edm-bench"


def _setup() -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.peer_settings"
    _create_database_if_missing()
    import django

    django.setup()


def _create_database_if_missing() -> None:
    """CREATE DATABASE <name>_peer on the server of DATABASE_URL (a no-op when present)."""
    import psycopg
    from django.conf import settings

    database = settings.DATABASES["default"]
    params = {
        "host": database.get("HOST") or None,
        "port": database.get("PORT") or None,
        "user": database.get("USER") or None,
        "password": database.get("PASSWORD") or None,
        "dbname": "postgres",
    }
    with psycopg.connect(**{k: v for k, v in params.items() if v}, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [database["NAME"]]
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{database["NAME"]}"')


def queue(n: int, seed: int) -> dict:
    from baselines import (
        FROM_EMAIL,
        FROM_NAME,
        HTML_TEMPLATE,
        SUBJECT_TEMPLATE,
        TEXT_TEMPLATE,
        make_recipients,
    )
    from django.core.management import call_command
    from django.db import connection
    from post_office import mail
    from post_office.models import EmailTemplate

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE post_office_log, post_office_attachment_emails, post_office_email, "
            "post_office_emailtemplate CASCADE"
        )
    EmailTemplate.objects.create(
        name=TEMPLATE_NAME,
        subject=SUBJECT_TEMPLATE,
        content=TEXT_TEMPLATE,
        html_content=HTML_TEMPLATE,
    )
    recipients = make_recipients(n, seed)
    started = time.perf_counter()
    sender = f"{FROM_NAME} <{FROM_EMAIL}>"
    chunk = 10_000  # send_many() builds every Email in memory before its bulk_create
    for start in range(0, n, chunk):
        mail.send_many(
            [
                {
                    "sender": sender,
                    "recipients": [recipient.email],
                    "template": TEMPLATE_NAME,
                    "context": recipient.context(),
                }
                for recipient in recipients[start : start + chunk]
            ]
        )
    elapsed = time.perf_counter() - started
    return {"queued": n, "queue_seconds": round(elapsed, 2), "queue_per_s": round(n / elapsed)}


def send(processes: int) -> dict:
    from post_office.mail import send_queued_mail_until_done
    from post_office.models import STATUS, Email

    lockfile = os.path.join(tempfile.gettempdir(), f"edm-bench-post-office-{os.getpid()}")
    before_self = resource.getrusage(resource.RUSAGE_SELF)
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    send_queued_mail_until_done(lockfile, processes)
    elapsed = time.perf_counter() - started
    after_self = resource.getrusage(resource.RUSAGE_SELF)
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(
        after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        for after, before in ((after_self, before_self), (after_children, before_children))
    )
    sent = Email.objects.filter(status=STATUS.sent).count()
    failed = Email.objects.filter(status=STATUS.failed).count()
    return {
        "sent": sent,
        "failed": failed,
        "send_seconds": round(elapsed, 2),
        "sender_cpu_s": round(cpu, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["queue", "send"])
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    _setup()
    if args.step == "queue":
        result = queue(args.n, args.seed)
    else:
        result = send(args.processes)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

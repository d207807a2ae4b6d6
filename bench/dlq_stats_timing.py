"""Time the DLQ endpoints with N dead letters (two owners); see docs/dispatch-api.md.

Run against a throwaway database: it creates users and rows and leaves them.
"""

# ruff: noqa: E402 - Django is set up before the models are imported
from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.getcwd())
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "edm.settings")
import django

django.setup()
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from apps.dispatch.models import Task
from apps.dispatch.selectors import dlq_stats
from apps.services.models import Pool

settings.ALLOWED_HOSTS = ["*"]
N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
User = get_user_model()
alice = User.objects.create_user("alice", password="x")
bob = User.objects.create_user("bob", password="x")
ops = User.objects.create_user("ops", password="x", is_staff=True, is_superuser=True)
pool = Pool.objects.get_or_create(name="default")[0]
types = ["smtp_451", "smtp_421", "timeout", "transient", "connection_reset", "smtp_550"]
with connection.cursor() as c:
    for owner, count in ((alice, N * 9 // 10), (bob, N - N * 9 // 10)):
        task = Task.objects.create(
            owner=owner, name="big", subject="s", body_text="b", pool=pool, status="completed"
        )
        c.execute(
            """
            INSERT INTO dispatch_subtask (task_id, owner_id, contact_id, to_email, status,
                attempts, attempt_token, next_attempt_at, message_id, last_error,
                error_class, history, created_at)
            SELECT %s, %s, g, 'r' || g || '@example.com', 'dead', 6, 6, now(),
                   '<' || g || '@x>', '451', 'smtp_451', '[]', now()
            FROM generate_series(1, %s) g""",
            [task.pk, owner.pk, count],
        )
        c.execute(
            """
            INSERT INTO dispatch_deadletter (subtask_id, task_id, owner_id, error_type,
                error_message, history, status, reprocess_count, created_at, updated_at)
            SELECT s.id, s.task_id, s.owner_id, (%s::text[])[1 + s.id %% 6], '451 later',
                   '[{"attempt": 1}]', (ARRAY['pending', 'pending', 'pending',
                   'reprocessing', 'resolved', 'expired'])[1 + (s.id / 7) %% 6], 0,
                   now(), now()
            FROM dispatch_subtask s WHERE s.task_id = %s""",
            [types, task.pk],
        )
    c.execute("VACUUM ANALYZE dispatch_deadletter")


def median_ms(fn, runs=15):
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


for name, user in (("staff", ops), ("owner of 90%", alice)):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Token " + Token.objects.create(user=user).key)
    for url in ("/api/dlq/stats", "/api/dlq", "/api/dlq?status=pending&error_type=timeout"):
        print(f"{name:14} GET {url:45} {median_ms(lambda api=api, url=url: api.get(url)):6.1f} ms")
print(f"dlq_stats() alone {median_ms(dlq_stats):6.1f} ms")

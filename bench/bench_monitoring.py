#!/usr/bin/env python
"""Monitoring with 1,000,000 subtasks stored (BENCHMARKS.md, "Monitoring and events").

Builds (fixed seed, straight SQL for speed): 10 owners, 200 email services, one task of
``--subtasks`` recipients being sent (40 % sent, 1 % failed, 0.5 % dead with their
dead letters, the rest pending; 2,000 of them waiting for a retry), 60 smaller live
tasks, 2 dispatcher slots and 50 chunk rows in flight, a day of samples at one per
minute, 1,000 resolved alerts and the seeded rules with one open alert. Then, through
Django's test client (the whole middleware stack, no network), as an operator and as a
tenant:

* p50 / p95 of ``/api/monitoring/system-health``, ``performance-metrics`` (last hour
  and last day), ``queue-status``, ``alerts`` and ``/admin/dashboard/``;
* a full ``/metrics`` scrape: p50 / p95 and size;
* one round of rule evaluation (``rules_evaluate``): p50 / p95.

    DEBUG=1 .venv/bin/python scripts/devdb.py -- .venv/bin/python bench/bench_monitoring.py
    ... --smoke     # 20,000 subtasks, seconds
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import median, percentile, report, setup_django  # noqa: E402

OWNERS = 10
SERVICES = 200
SMALL_TASKS = 60


def build(subtasks: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from apps.dispatch.models import DispatcherSlot, SendChunk, Task
    from apps.monitoring.models import Alert, AlertRule, SystemSample
    from apps.monitoring.seeds import rules_seed
    from apps.services.models import EmailService
    from apps.services.selectors import pool_default

    random.seed(7)
    User = get_user_model()
    owners = [
        User.objects.get_or_create(username=f"bench-owner-{i}", defaults={"is_staff": True})[0]
        for i in range(OWNERS)
    ]
    operator = User.objects.get_or_create(
        username="bench-operator", defaults={"is_staff": True, "is_superuser": True}
    )[0]
    pool = pool_default()
    EmailService.objects.bulk_create(
        [
            EmailService(
                pool=pool, name=f"bench-mx-{i:03d}", host="127.0.0.1", port=25,
                from_email=f"s{i}@bench.test", total_sent=random.randint(0, 10**6),
                total_failed=random.randint(0, 1000),
            )
            for i in range(SERVICES)
        ],
        ignore_conflicts=True,
    )  # fmt: skip
    now = timezone.now()

    def task(owner, name, total, status="sending"):
        return Task.objects.create(
            owner=owner, name=name, subject="s", body_text="b", pool=pool, status=status,
            total=total, queued_at=now - timedelta(minutes=30), started_at=now - timedelta(minutes=29),
        )  # fmt: skip

    big = task(owners[0], "bench big task", subtasks)
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO dispatch_subtask (task_id, owner_id, contact_id, to_email, status,
                attempts, attempt_token, next_attempt_at, message_id, last_error, error_class,
                history, created_at)
            SELECT %(task)s, %(owner)s, g, 'r' || g || '@bench.test',
                   CASE WHEN g %% 1000 < 400 THEN 'sent' WHEN g %% 1000 < 410 THEN 'failed'
                        WHEN g %% 1000 < 415 THEN 'dead' ELSE 'pending' END,
                   0, 0,
                   CASE WHEN g %% 500 = 499 THEN now() + interval '10 minutes'
                        ELSE now() - interval '20 minutes' END,
                   '<' || g || '@bench.test>', '', '', '[]'::jsonb, now()
            FROM generate_series(1, %(n)s) g
            """,
            {"task": big.pk, "owner": owners[0].pk, "n": subtasks},
        )
        cursor.execute(
            """
            INSERT INTO dispatch_deadletter (subtask_id, task_id, owner_id, error_type,
                error_message, history, status, reprocess_count, created_at, updated_at)
            SELECT id, task_id, owner_id, 'smtp_451', 'try later', '[]'::jsonb, 'pending', 0,
                   now() - interval '2 hours', now() - interval '2 hours'
            FROM dispatch_subtask WHERE task_id = %s AND status = 'dead'
            """,
            [big.pk],
        )
    for number in range(SMALL_TASKS):
        owner = owners[number % OWNERS]
        small = task(
            owner, f"bench small task {number}", 100, "queued" if number % 3 else "sending"
        )
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO dispatch_subtask (task_id, owner_id, contact_id, to_email, status,
                    attempts, attempt_token, next_attempt_at, message_id, last_error,
                    error_class, history, created_at)
                SELECT %s, %s, g, 's' || g || '@bench.test', 'pending', 0, 0,
                       now() - interval '1 minute', '<s' || g || '>', '', '', '[]'::jsonb, now()
                FROM generate_series(1, 100) g
                """,
                [small.pk, owner.pk],
            )
    load_seconds = time.monotonic() - started
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE dispatch_subtask")
        cursor.execute("ANALYZE dispatch_deadletter")
        cursor.execute("ANALYZE dispatch_progressdelta")
    for number in range(2):
        DispatcherSlot.objects.update_or_create(
            number=number,
            defaults={
                "holder": f"bench-{number}", "hostname": "bench", "pid": os.getpid(),
                "expires_at": now + timedelta(hours=1),
            },
        )  # fmt: skip
    ids = list(big.subtasks.filter(status="pending").values_list("pk", flat=True)[:2500])
    SendChunk.objects.bulk_create(
        SendChunk(
            service_id=EmailService.objects.order_by("pk")[i].pk, holder=f"bench-{i % 2}",
            subtask_ids=ids[i * 50 : (i + 1) * 50], tokens=[0] * 50, task_ids=[big.pk],
            position=3, lease_expires_at=now + timedelta(hours=1),
        )
        for i in range(50)
    )  # fmt: skip
    SystemSample.objects.bulk_create(
        SystemSample(
            taken_at=now - timedelta(minutes=m), interval_seconds=60,
            pending=500_000 + m, sent=random.randint(0, 3000), failed=random.randint(0, 30),
            services_ready=150, services_held=50, dispatchers_live=2,
        )
        for m in range(1, 1441)
    )  # fmt: skip
    rules_seed(AlertRule)
    rule = AlertRule.objects.get(seed="task-wait-warning")
    Alert.objects.bulk_create(
        Alert(
            rule=rule, rule_name=rule.name, metric=rule.metric, subject=f"task:{i}",
            level="warning", status="resolved", value=400, threshold=300,
            fired_at=now - timedelta(hours=i), resolved_at=now - timedelta(hours=i) + timedelta(minutes=5),
        )
        for i in range(1, 1001)
    )  # fmt: skip
    return {"operator": operator, "tenant": owners[1], "load_seconds": round(load_seconds, 1)}


def timed(call, times: int) -> tuple[float, float]:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return round(median(samples), 2), round(percentile(samples, 95), 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="20,000 subtasks")
    parser.add_argument("--subtasks", type=int, default=1_000_000)
    parser.add_argument("--times", type=int, default=60, help="requests per figure")
    args = parser.parse_args()
    if args.smoke:
        args.subtasks, args.times = 20_000, 10
    setup_django()

    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment
    from rest_framework.authtoken.models import Token

    from apps.monitoring.evaluation import rules_evaluate

    setup_test_environment()
    settings.ALLOWED_HOSTS = ["*"]
    data = build(args.subtasks)
    figures: dict = {"subtasks": args.subtasks, "load_seconds": data["load_seconds"]}
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM dispatch_subtask")
        figures["subtasks_stored"] = cursor.fetchone()[0]

    def client_for(user) -> Client:
        client = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
        client.force_login(user)
        return client

    operator, tenant = client_for(data["operator"]), client_for(data["tenant"])
    now = time.time()
    day_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 86400))
    urls = {
        "system_health": "/api/monitoring/system-health",
        "performance_metrics_hour": "/api/monitoring/performance-metrics",
        "performance_metrics_day": f"/api/monitoring/performance-metrics?from={day_ago}&step=600",
        "queue_status": "/api/monitoring/queue-status",
        "alerts": "/api/monitoring/alerts",
        "dashboard": "/admin/dashboard/",
    }
    for who, client in (("operator", operator), ("tenant", tenant)):
        for name, url in urls.items():
            status = client.get(url).status_code  # warm-up, and the answer is checked
            assert status in (200, 503), (url, status)
            p50, p95 = timed(lambda url=url, client=client: client.get(url), args.times)
            figures[f"{who}_{name}_p50_ms"] = p50
            figures[f"{who}_{name}_p95_ms"] = p95

    scraper = Client()
    body = scraper.get("/metrics").content
    figures["metrics_bytes"] = len(body)
    figures["metrics_lines"] = body.count(b"\n")
    p50, p95 = timed(lambda: scraper.get("/metrics"), args.times)
    figures["metrics_scrape_p50_ms"], figures["metrics_scrape_p95_ms"] = p50, p95

    rules_evaluate()  # warm-up (and the first firing)
    p50, p95 = timed(rules_evaluate, args.times)
    figures["rule_round_p50_ms"], figures["rule_round_p95_ms"] = p50, p95
    figures["load_average"] = os.getloadavg()[0]
    report("monitoring", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())

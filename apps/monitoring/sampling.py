"""Stored metrics: the periodic sample and the retention that prunes it.

:func:`samples_take` (every ``monitoring.sample_interval``, by the monitor loop) reads
the dispatch app's selectors once — live tasks and their progress counters, queue times,
service states, dispatcher slots, dead letters — plus the database's own figures, and
writes one :class:`SystemSample`, the :class:`TaskProcessingMetric` of every task that
is live or finished since the previous sample, and an :class:`OwnerSample` per owner
whose tasks moved.

"Sends per minute by outcome" are differences of the progress counters between two
samples (the counters are exact in every snapshot), so they are right whichever
processes and nodes sent, and cost nothing on the sending path. A task first seen at
the very first sample is taken as a baseline (its earlier sends are not charged to that
minute).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from apps.config.selectors import config_get
from apps.dispatch import selectors as dispatch
from apps.monitoring.models import (
    Alert,
    Notification,
    OwnerSample,
    ServiceRate,
    SystemSample,
    TaskProcessingMetric,
    TaskWaitMetric,
)

OUTCOMES = ("sent", "failed", "dead", "skipped", "cancelled")
COUNTS = ("total", "sent", "failed", "dead", "skipped", "cancelled", "unknown")
RATES = (
    "started_at",
    "finished_at",
    "duration_seconds",
    "throughput_per_minute",
    "failure_rate",
    "bounce_rate",
)


def _rates(counts: dict, task: dict, now) -> dict:
    outcomes = counts["sent"] + counts["failed"] + counts["dead"]
    started, finished = task["started_at"], task["completed_at"]
    duration = ((finished or now) - started).total_seconds() if started else 0.0
    done = outcomes + counts["skipped"]
    return {
        "started_at": started,
        "finished_at": finished,
        "duration_seconds": max(0.0, duration),
        "throughput_per_minute": done / (duration / 60) if duration > 0 else 0.0,
        "failure_rate": (counts["failed"] + counts["dead"]) / outcomes if outcomes else 0.0,
        "bounce_rate": counts["failed"] / outcomes if outcomes else 0.0,
    }


def _database_figures() -> tuple[int, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()),"
            " pg_database_size(current_database())"
        )
        connections, size = cursor.fetchone()
    return connections, size


def samples_take(*, now=None) -> SystemSample:
    """Take one sample (see the module docstring) and return it."""
    now = now or timezone.now()
    previous = SystemSample.objects.order_by("-taken_at").first()
    since = (now - previous.taken_at).total_seconds() + 5 if previous else 3600.0
    tasks = dispatch.tasks_live(finished_within=since)
    ids = [task["id"] for task in tasks]
    progress = dispatch.tasks_progress(ids)
    live = [t for t in tasks if t["status"] in dispatch.LIVE_STATUSES]
    queue_times = dispatch.tasks_queue_times(
        [t["id"] for t in live if t["status"] in ("queued", "sending")]
    )
    services = dispatch.service_states()
    slots = dispatch.dispatcher_slots()
    dead_letters = dispatch.dead_letters_overview(since_seconds=60)
    connections, size = _database_figures()

    known = {m.task_id: m for m in TaskProcessingMetric.objects.filter(task_id__in=ids)}
    gained = dict.fromkeys(OUTCOMES, 0)
    by_owner: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0))
    metrics = []
    for task in tasks:
        counts = progress[task["id"]]
        old = known.get(task["id"])
        if old is not None or previous is not None:
            for outcome in OUTCOMES:
                delta = max(0, counts[outcome] - (getattr(old, outcome) if old else 0))
                gained[outcome] += delta
                by_owner[task["owner_id"]][outcome] += delta
        metrics.append(
            TaskProcessingMetric(
                task_id=task["id"],
                owner_id=task["owner_id"],
                **{name: counts[name] for name in COUNTS},
                **_rates(counts, task, now),
            )
        )

    depth = dict.fromkeys(("pending", "allocated", "sending", "unknown"), 0)
    waiting = 0
    for task in live:
        counts = progress[task["id"]]
        for status in depth:
            depth[status] += counts[status]
        if task["status"] == "scheduled":
            waiting += counts["pending"]
    waiting += sum(times["waiting"] for times in queue_times.values())
    ready_since = [t["ready_since"] for t in queue_times.values() if t["ready_since"]]
    states = defaultdict(int)
    for service in services:
        states[service["state"]] += 1

    with transaction.atomic():
        TaskProcessingMetric.objects.bulk_create(
            metrics,
            update_conflicts=True,
            unique_fields=["task"],
            update_fields=[*COUNTS, *RATES, "updated_at"],
        )
        OwnerSample.objects.bulk_create(
            OwnerSample(
                taken_at=now, owner_id=owner, sent=c["sent"], failed=c["failed"], dead=c["dead"]
            )
            for owner, c in by_owner.items()
            if c["sent"] or c["failed"] or c["dead"]
        )
        _service_rates(services, now)
        sample = SystemSample.objects.create(
            taken_at=now,
            interval_seconds=(now - previous.taken_at).total_seconds() if previous else 0.0,
            waiting=waiting,
            tasks_live=len(live),
            oldest_pending_seconds=(
                max(0.0, (now - min(ready_since)).total_seconds()) if ready_since else None
            ),
            services_ready=states["ready"],
            services_cooling=states["cooling"],
            services_held=states["held"],
            services_exhausted=states["exhausted"],
            services_disabled=states["disabled"],
            dlq_pending=dead_letters["pending"],
            dispatchers_live=sum(1 for slot in slots if slot["live"]),
            db_connections=connections,
            db_size_bytes=size,
            **depth,
            **gained,
        )
    return sample


def _service_rates(services: list[dict], now) -> None:
    """Per service: sends per minute since the previous sample, from its counters."""
    known = {rate.service_id: rate for rate in ServiceRate.objects.all()}
    rows = []
    for service in services:
        old = known.get(service["id"])
        minutes = (now - old.taken_at).total_seconds() / 60 if old else 0.0
        sent = max(0, service["total_sent"] - old.total_sent) if old else 0
        failed = max(0, service["total_failed"] - old.total_failed) if old else 0
        rows.append(
            ServiceRate(
                service_id=service["id"],
                taken_at=now,
                total_sent=service["total_sent"],
                total_failed=service["total_failed"],
                sent_per_minute=sent / minutes if minutes > 0 else 0.0,
                failed_per_minute=failed / minutes if minutes > 0 else 0.0,
            )
        )
    ServiceRate.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["service"],
        update_fields=[
            "taken_at",
            "total_sent",
            "total_failed",
            "sent_per_minute",
            "failed_per_minute",
        ],
    )


def metrics_prune(*, now=None) -> dict[str, int]:
    """Delete what is older than ``monitoring.metrics_retention_days``: samples, the
    processing and wait metrics of tasks finished (first sent) before, resolved alerts,
    and delivered or given-up notifications (with their attempts). Returns the rows
    deleted per kind."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=int(config_get("monitoring.metrics_retention_days")))
    deleted = {}
    for name, queryset in (
        ("system_samples", SystemSample.objects.filter(taken_at__lt=cutoff)),
        ("owner_samples", OwnerSample.objects.filter(taken_at__lt=cutoff)),
        ("processing_metrics", TaskProcessingMetric.objects.filter(finished_at__lt=cutoff)),
        ("wait_metrics", TaskWaitMetric.objects.filter(first_sent_at__lt=cutoff)),
        (
            "notifications",
            Notification.objects.filter(
                status__in=[Notification.Status.SENT, Notification.Status.FAILED],
                created_at__lt=cutoff,
            ),
        ),
        ("alerts", Alert.objects.filter(status=Alert.Status.RESOLVED, resolved_at__lt=cutoff)),
    ):
        deleted[name] = queryset.delete()[0]
    return deleted

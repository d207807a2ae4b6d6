"""Reads of monitoring shared by the API, the dashboard and Prometheus.

Everything about tasks, services and dispatchers comes from the dispatch app's selectors
(live tasks, their progress counters, queue times, service states, slots, dead
letters); what monitoring stores itself (samples, alerts, the monitor lease) is read
here. ``owner_id`` limits a read to one tenant's tasks; ``None`` is an operator's view.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime, timedelta
from functools import cached_property

from django.core.exceptions import EmptyResultSet
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import Count, QuerySet
from django.db.models.query import FlatValuesListIterable, ValuesIterable, ValuesListIterable
from django.utils import timezone
from django_q.models import OrmQ, Schedule

from apps.config.selectors import config_get
from apps.dispatch import selectors as dispatch
from apps.monitoring.access import is_operator
from apps.monitoring.models import Alert, MonitorLease, OwnerSample, SystemSample

# Longest series a request may ask for.
MAX_POINTS = 2000
# A q2 schedule this late means no cluster is running its scheduler.
SCHEDULE_LATE = 150
SAMPLE_FIELDS = (
    "pending",
    "allocated",
    "sending",
    "waiting",
    "unknown",
    "tasks_live",
    "services_ready",
    "services_cooling",
    "services_held",
    "services_exhausted",
    "services_disabled",
    "oldest_pending_seconds",
    "dlq_pending",
    "dispatchers_live",
    "db_connections",
    "db_size_bytes",
)
OUTCOME_FIELDS = ("sent", "failed", "dead", "skipped", "cancelled")
OWNER_OUTCOMES = ("sent", "failed", "dead")


def owner_scope(user) -> int | None:
    """``None`` (everything) for an operator, else the user's own id."""
    return None if is_operator(user) else user.pk


def alerts_visible(user) -> QuerySet[Alert]:
    """Every alert for an operator; a tenant's: the alerts about its own tasks."""
    alerts = Alert.objects.select_related("rule", "acknowledged_by")
    owner = owner_scope(user)
    return alerts if owner is None else alerts.filter(owner_id=owner)


def alerts_open_counts(*, owner_id: int | None = None) -> dict[str, int]:
    """Open alerts by level (``warning``, ``critical``, ``emergency``)."""
    alerts = Alert.objects.exclude(status=Alert.Status.RESOLVED)
    if owner_id is not None:
        alerts = alerts.filter(owner_id=owner_id)
    counts = dict(alerts.values_list("level").annotate(n=Count("id")).values_list("level", "n"))
    return {level: counts.get(level, 0) for level in ALERT_LEVELS}


def monitor_lease() -> MonitorLease | None:
    return MonitorLease.objects.filter(name="monitor").first()


def _age(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else round(max(0.0, (now - moment).total_seconds()), 3)


class Reads:
    """The dispatch reads of one request, each made at most once, so that a page showing
    both the health and the queue (the dashboard) reads them once."""

    def __init__(self, owner_id: int | None = None) -> None:
        self.owner_id = owner_id

    @cached_property
    def tasks(self) -> list[dict]:
        return dispatch.tasks_live(owner_id=self.owner_id)

    @cached_property
    def progress(self) -> dict[int, dict[str, int]]:
        return dispatch.tasks_progress([t["id"] for t in self.tasks])

    @cached_property
    def times(self) -> dict[int, dict]:
        ids = [t["id"] for t in self.tasks if t["status"] in ("queued", "sending")]
        return dispatch.tasks_queue_times(ids)

    @cached_property
    def services(self) -> list[dict]:
        return dispatch.service_states()

    @cached_property
    def slots(self) -> list[dict]:
        return dispatch.dispatcher_slots()


# The monitor lease's columns system_health reads.
_LEASE_COLUMNS = ("name", "hostname", "pid", "heartbeat_at", "last_round_at",
                  "last_dispatcher_heartbeat_at")  # fmt: skip
ALERT_LEVELS = ("warning", "critical", "emergency")


def _health_reads(now: datetime) -> tuple[int, int, MonitorLease | None, dict[str, int]]:
    """What the health reads of its own, in one statement (one round trip, and the
    database's answer): overdue q2 schedules, queued q2 tasks, the monitor lease (as
    :func:`monitor_lease`, with the columns the health needs) and the open alerts by
    level (as :func:`alerts_open_counts`)."""
    counts = ", ".join(f"count(*) FILTER (WHERE level = '{level}')" for level in ALERT_LEVELS)
    lease_columns = ", ".join(f"l.{name}" for name in _LEASE_COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT count(*) FROM {Schedule._meta.db_table} "
            "WHERE name LIKE 'edm:%%' AND next_run < %s), "
            f"(SELECT count(*) FROM {OrmQ._meta.db_table}), {lease_columns}, a.* "
            f"FROM (SELECT {counts} FROM {Alert._meta.db_table} WHERE status <> %s) a "
            f"LEFT JOIN {MonitorLease._meta.db_table} l ON l.name = 'monitor'",
            [now - timedelta(seconds=SCHEDULE_LATE), Alert.Status.RESOLVED],
        )
        row = cursor.fetchone()
    late, queued = row[0], row[1]
    lease_values = row[2 : 2 + len(_LEASE_COLUMNS)]
    lease = (
        MonitorLease(**dict(zip(_LEASE_COLUMNS, lease_values, strict=True)))
        if lease_values[0] is not None
        else None
    )
    open_alerts = dict(zip(ALERT_LEVELS, row[2 + len(_LEASE_COLUMNS) :], strict=True))
    return late, queued, lease, open_alerts


def system_health(reads: Reads | None = None) -> tuple[bool, dict]:
    """``(healthy, {status, checked_at, components: {name: {status, …}}})``; a component
    is ``ok``, ``degraded`` or ``down``, and any ``down`` makes the whole unhealthy:

    * ``database`` — answers a query;
    * ``dispatchers`` — a heartbeat within ``monitoring.heartbeat_timeout`` (the newest
      of the live slots and of what the monitor loop last recorded), unless
      ``queue.dispatchers`` is 0;
    * ``cluster`` — the q2 cluster runs: the monitor loop (a q2 task) renewed its lease
      within the same timeout; its schedules are not overdue (``degraded``);
    * ``backlog`` — ready messages and the oldest one's age (``degraded`` beyond
      10 minutes);
    * ``alerts`` — open alerts by level (``degraded`` with a critical or emergency one).
    """
    now = timezone.now()
    reads = reads if reads is not None and reads.owner_id is None else Reads()
    started = time.perf_counter()
    components: dict[str, dict] = {}
    try:
        late, queued, lease, open_alerts = _health_reads(now)
    except Exception as exc:  # noqa: BLE001 - any failure means the database is down
        components["database"] = {"status": "down", "error": type(exc).__name__}
        return False, {"status": "unhealthy", "checked_at": now, "components": components}
    components["database"] = {
        "status": "ok",
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
    }

    timeout = float(config_get("monitoring.heartbeat_timeout"))
    slots = reads.slots
    wanted = int(config_get("queue.dispatchers"))
    beats = [slot["heartbeat_at"] for slot in slots]
    if lease is not None and lease.last_dispatcher_heartbeat_at:
        beats.append(lease.last_dispatcher_heartbeat_at)
    last_beat = max(beats) if beats else None
    beat_age = _age(last_beat, now)
    if wanted == 0:
        state = "ok"
    elif beat_age is None or beat_age > timeout:
        state = "down"
    else:
        state = "ok"
    components["dispatchers"] = {
        "status": state,
        "wanted": wanted,
        "live": sum(1 for slot in slots if slot["live"]),
        "last_heartbeat_at": last_beat,
        "heartbeat_age_seconds": beat_age,
        "timeout_seconds": timeout,
    }

    lease_age = _age(lease.heartbeat_at if lease else None, now)
    if lease_age is None or lease_age > timeout:
        state = "down"
    elif late:
        state = "degraded"
    else:
        state = "ok"
    components["cluster"] = {
        "status": state,
        "monitor_heartbeat_age_seconds": lease_age,
        "monitor_host": f"{lease.hostname}:{lease.pid}" if lease else None,
        "last_evaluation_at": lease.last_round_at if lease else None,
        "schedules_overdue": late,
        "queued_q2_tasks": queued,
    }

    tasks, progress, times = reads.tasks, reads.progress, reads.times
    ready_since = [t["ready_since"] for t in times.values() if t["ready_since"]]
    oldest = _age(min(ready_since), now) if ready_since else None
    backlog = sum(
        progress[t["id"]]["pending"] + progress[t["id"]]["allocated"] + progress[t["id"]]["sending"]
        for t in tasks
    )
    components["backlog"] = {
        "status": "degraded" if oldest is not None and oldest > 600 else "ok",
        "messages": backlog,
        "oldest_pending_seconds": oldest,
        "tasks_live": len(tasks),
    }
    components["alerts"] = {
        "status": "degraded" if open_alerts["critical"] or open_alerts["emergency"] else "ok",
        "open": open_alerts,
    }
    states = {c["status"] for c in components.values()}
    status = "unhealthy" if "down" in states else "degraded" if "degraded" in states else "healthy"
    return status != "unhealthy", {"status": status, "checked_at": now, "components": components}


def queue_status(*, owner_id: int | None, reads: Reads | None = None) -> dict:
    """The queue now: counts by status, per owner, per service (operators), the
    waiting queue (retry back-off and schedules), the oldest ready message, the live
    tasks, the dispatchers and service reservations (operators), dead letters."""
    now = timezone.now()
    reads = reads if reads is not None else Reads(owner_id)
    tasks, progress, times = reads.tasks, reads.progress, reads.times
    keys = ("total", *dispatch.PROGRESS_KEYS)
    by_status = dict.fromkeys(keys, 0)
    owners: dict[int, dict] = {}
    retry_waiting = scheduled = 0
    next_waiting = []
    rows = []
    for task in tasks:
        counts = progress[task["id"]]
        entry = owners.setdefault(
            task["owner_id"],
            {
                "owner_id": task["owner_id"],
                "owner": task["owner"],
                "tasks": 0,
                **dict.fromkeys(keys, 0),
            },
        )
        entry["tasks"] += 1
        for key in keys:
            by_status[key] += counts[key]
            entry[key] += counts[key]
        queue = times.get(task["id"], {})
        if task["status"] == "scheduled":
            scheduled += counts["pending"]
            if task["scheduled_at"]:
                next_waiting.append(task["scheduled_at"])
        else:
            retry_waiting += queue.get("waiting", 0)
            if queue.get("next_waiting_at"):
                next_waiting.append(queue["next_waiting_at"])
        rows.append(
            {
                "id": task["id"],
                "name": task["name"],
                "owner": task["owner"],
                "status": task["status"],
                "priority": task["priority"],
                "progress": counts,
                "waiting_since": task["waiting_since"],
                "wait_seconds": _age(task["waiting_since"], now),
                "ready_since": queue.get("ready_since"),
            }
        )
    ready = [(q["ready_since"], pk) for pk, q in times.items() if q["ready_since"]]
    oldest = None
    if ready:
        since, task_id = min(ready)
        oldest = {"task_id": task_id, "since": since, "age_seconds": _age(since, now)}
    result = {
        "checked_at": now,
        "by_status": by_status,
        "by_owner": sorted(owners.values(), key=lambda o: -o["pending"]),
        "waiting_queue": {
            "retry": retry_waiting,
            "scheduled": scheduled,
            "next_at": min(next_waiting) if next_waiting else None,
        },
        "oldest_pending": oldest,
        "tasks": rows,
        "dead_letters": dispatch.dead_letters_overview(since_seconds=3600, owner_id=owner_id),
    }
    if owner_id is None:
        services = reads.services
        result["by_service"] = services
        result["services"] = dict(sorted(_count_by(services, "state").items()))
        result["dispatchers"] = reads.slots
        result["reservations"] = [
            {"service_id": s["id"], "service": s["name"], "held_by": s["held_by"],
             "held_since": s["held_since"], "chunks": s["chunks"]}
            for s in services
            if s["held_by"]
        ]  # fmt: skip
    return result


def _count_by(rows: list[dict], key: str) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[row[key]] += 1
    return counts


def performance_series(
    *, start: datetime, end: datetime, step: float, owner_id: int | None = None
) -> list[dict]:
    """Samples between ``start`` and ``end`` in buckets of ``step`` seconds, oldest
    first: per bucket the outcomes gained (sums) and, for an operator, the mean of each
    gauge (queue depth, services, dead letters, dispatchers, database). A tenant's
    series holds its own sends only (``sent``, ``failed``, ``dead``). One aggregate
    over the sample table's unique index on ``taken_at``."""
    if owner_id is None:
        table, where = SystemSample._meta.db_table, ""
        sums = OUTCOME_FIELDS
        means = SAMPLE_FIELDS
    else:
        table, where = OwnerSample._meta.db_table, "AND owner_id = %(owner)s"
        sums, means = OWNER_OUTCOMES, ()
    columns = [f"sum({name})::bigint" for name in sums] + [f"avg({name})::float8" for name in means]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT date_bin(make_interval(secs => %(step)s), taken_at, %(start)s) AS bucket,
                   count(*), {", ".join(columns)}
            FROM {table}
            WHERE taken_at >= %(start)s AND taken_at < %(end)s {where}
            GROUP BY 1 ORDER BY 1
            """,
            {"step": step, "start": start, "end": end, "owner": owner_id},
        )
        names = ["time", "samples", *sums, *means]
        points = []
        for row in cursor.fetchall():
            point = dict(zip(names, row, strict=True))
            for name in means:
                if point[name] is not None:
                    point[name] = round(point[name], 2)
            points.append(point)
    return points


def querysets_fetch(querysets: dict[str, QuerySet]) -> dict[str, list]:
    """The rows of several querysets, read in one round trip: their statements go to the
    database as one multi-statement query (client-side binding, Django's default with
    psycopg) and each result set is read in turn, as the queryset would have given it
    (model instances, ``values()`` dicts, ``values_list()`` tuples or flat values). For
    plain querysets: filters, ordering, slicing, ``only``, fields through joins in
    ``values``; no ``select_related`` or ``prefetch_related``. With server-side binding
    (one statement per query) they are read one by one instead."""
    # The connection itself, not the ``connection`` proxy: the compilers look it up often.
    database = connections[DEFAULT_DB_ALIAS]
    if database.settings_dict["OPTIONS"].get("server_side_binding"):
        return {name: list(queryset) for name, queryset in querysets.items()}
    compiled = []
    result: dict[str, list] = {}
    for name, queryset in querysets.items():
        compiler = queryset.query.get_compiler(connection=database)
        try:
            sql, params = compiler.as_sql()
        except EmptyResultSet:  # e.g. ``pk__in=[]``: nothing to ask
            result[name] = []
            continue
        compiled.append((name, queryset, compiler, sql, params))
    if not compiled:
        return result
    with database.cursor() as cursor:
        cursor.execute(
            "; ".join(sql for *_head, sql, _params in compiled),
            [param for *_head, params in compiled for param in params],
        )
        for index, (name, queryset, compiler, _sql, _params) in enumerate(compiled):
            if index:
                cursor.nextset()
            result[name] = _rows_as(queryset, compiler, cursor.fetchall(), database.alias)
    return result


def _rows_as(queryset: QuerySet, compiler, rows: list[tuple], alias: str) -> list:
    """``rows`` of ``queryset``'s statement as its iterable would give them."""
    columns = [column for column, _sql, _alias in compiler.select[: compiler.col_count]]
    converters = compiler.get_converters(columns)
    if converters:
        rows = list(compiler.apply_converters(rows, converters))
    query, iterable = queryset.query, queryset._iterable_class
    if iterable is FlatValuesListIterable:
        return [row[0] for row in rows]
    if iterable is ValuesListIterable:
        return [tuple(row) for row in rows]
    if iterable is ValuesIterable:
        names = list(query.selected or [])
        names = names or [*query.extra_select, *query.values_select, *query.annotation_select]
        return [dict(zip(names, row, strict=True)) for row in rows]
    fields = [columns[i].target.attname for i in compiler.klass_info["select_fields"]]
    return [queryset.model.from_db(alias, fields, row) for row in rows]

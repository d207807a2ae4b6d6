"""Reads shared by the API, the admin, the commands and the tests."""

from __future__ import annotations

import functools
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from apps.core.database import fetch_prepared
from apps.dispatch import progress
from apps.dispatch.models import SubTask, Task, TestSend

# The progress counters of a task, in order (one per subtask status).
PROGRESS_KEYS = progress.STATUSES

# The contacts a task sends to (``c`` is ``contacts_contact``): the owner's explicit
# contacts, plus those in an included tag and in no excluded tag. Named parameters:
# ``owner``, ``explicit``, ``include``, ``exclude`` (id lists). Queueing materializes
# exactly these (``services._materialize``); :func:`task_audience` counts them.
RECIPIENTS_WHERE = """
c.owner_id = %(owner)s
AND (c.id = ANY(%(explicit)s) OR (
      EXISTS (SELECT 1 FROM contacts_contacttag i
              WHERE i.contact_id = c.id AND i.tag_id = ANY(%(include)s))
      AND NOT EXISTS (SELECT 1 FROM contacts_contacttag x
                      WHERE x.contact_id = c.id AND x.tag_id = ANY(%(exclude)s))))
"""


# A task's progress as ``(task_id, status, n)`` rows, for the tasks of ``{ids}`` (an SQL
# expression of a ``bigint[]``): the counters the triggers keep (``progress``), then what
# the live chunks say about their ``allocated`` rows. A live chunk's subtask rows are
# written when it ends (see ``models.SendChunk``): until then, the entries before its
# position that are still ``allocated`` were accepted (``accepted``, they count as
# ``sent``), and the entry at its position may be on the wire (``in_flight``:
# ``sending``).
_PROGRESS_ROWS = f"""
SELECT s.task_id, u.status, u.n
FROM (SELECT d.task_id, {progress.SUMS} FROM dispatch_progressdelta d
      WHERE d.task_id = ANY({{ids}}) GROUP BY d.task_id) s
{progress.AS_ROWS}
WHERE u.n <> 0
UNION ALL
SELECT s.task_id, CASE WHEN e.ord <= k.position THEN 'accepted' ELSE 'in_flight' END,
       count(*)
FROM dispatch_sendchunk k
CROSS JOIN LATERAL unnest(k.subtask_ids[1:k.position + 1], k.tokens[1:k.position + 1])
     WITH ORDINALITY AS e(id, token, ord)
JOIN dispatch_subtask s ON s.id = e.id AND s.attempt_token = e.token
WHERE k.position >= 0 AND k.task_ids && {{ids}} AND s.task_id = ANY({{ids}})
  AND (s.status = 'allocated') IS TRUE
GROUP BY 1, 2
"""


_CHUNK_STATES = {"accepted": "sent", "in_flight": "sending"}


def _no_progress() -> dict[str, int]:
    return dict.fromkeys(("total", *PROGRESS_KEYS), 0)


def _add_progress(counts: dict[str, int], status: str, n: int) -> None:
    """Count one row of :data:`_PROGRESS_ROWS` into a task's ``counts``."""
    if status in _CHUNK_STATES:
        counts["allocated"] -= n
        counts[_CHUNK_STATES[status]] += n
    else:
        counts[status] += n
        counts["total"] += n


def tasks_progress(task_ids: list[int]) -> dict[int, dict[str, int]]:
    """``{total, pending, allocated, sending, sent, failed, dead, skipped, cancelled,
    unknown}`` per task, read in ONE statement (one snapshot), so the parts always add
    up to ``total``: the counters the triggers keep (``progress``), with what the live
    chunks say about their ``allocated`` rows: accepted ones count as ``sent``, the one
    message per chunk that may be on the wire right now as ``sending``; ``allocated`` is
    then the ones claimed and never attempted. So after a pause or cancel, at most
    ``sending`` more messages can become ``sent``. A few rows per task whatever its
    size."""
    result = {pk: _no_progress() for pk in task_ids}
    if not task_ids:
        return result
    with connection.cursor() as cursor:
        cursor.execute(
            _PROGRESS_ROWS.format(ids="%(ids)s::bigint[]"), {"ids": sorted(set(task_ids))}
        )
        for task_id, status, n in cursor.fetchall():
            _add_progress(result[task_id], status, n)
    return result


# A row's version: PostgreSQL writes every change of a row (an UPDATE from anywhere: the
# ORM, a dispatcher's statement, a trigger) as a new tuple, at a new place (``ctid``),
# stamped with the writing transaction (``xmin``); the pair names one content of the row.
# A change of a task's relations writes its row too (migration 0009's triggers).
_ROW_VERSION = "t.xmin::text || ' ' || t.ctid::text"


@functools.cache
def _detail_statements() -> tuple[dict[str, str], tuple[str, ...]]:
    """The statements of :func:`owned_task_detail` by name, and the task's fields the
    first one reads (column and table names read from the models):

    - ``edm_task_detail``: the row's version, the task's fields, the ids of its three
      relations (as arrays), its progress rows as two arrays (statuses, counts; ``NULL``
      when there are none, and not read while the task sends);
    - ``edm_task_detail_version``: the version and the progress only;
    - ``edm_task_detail_version_only``: the version only.
    """
    fields = Task._meta.concrete_fields
    columns = [f"t.{field.column}" for field in fields]
    for name, column in (
        ("include_tags", "tag_id"),
        ("exclude_tags", "tag_id"),
        ("contacts", "contact_id"),
    ):
        table = getattr(Task, name).through._meta.db_table
        columns.append(
            f"ARRAY(SELECT r.{column} FROM {table} r WHERE r.task_id = t.id ORDER BY r.{column})"
        )
    progress = (
        " CROSS JOIN LATERAL (SELECT array_agg(r.status) AS statuses, array_agg(r.n) AS counts"
        f" FROM ({_PROGRESS_ROWS.format(ids='ARRAY[t.id]')}) r"
        " WHERE t.status <> %(sending)s) p"
    )
    task = f" FROM {Task._meta.db_table} t"
    where = " WHERE t.id = %(pk)s AND t.owner_id = %(owner)s"
    statements = {
        "edm_task_detail": (
            f"SELECT {_ROW_VERSION}, {', '.join(columns)}, p.statuses, p.counts"
            f"{task}{progress}{where}"
        ),
        "edm_task_detail_version": (
            f"SELECT {_ROW_VERSION}, p.statuses, p.counts{task}{progress}{where}"
        ),
        "edm_task_detail_version_only": f"SELECT {_ROW_VERSION}{task}{where}",
    }
    return statements, tuple(field.attname for field in fields)


# What this process last read in full of each task, by the row's version: its fields and
# the ids of its relations. At most ``_REMEMBERED_MAX`` tasks (then it starts over), and
# none that weighs over ``_REMEMBERED_WEIGHT_MAX``, counting a character of its fields (its
# bodies, mostly) as one and an id of its relations as eight: those are read in full each
# time.
_remembered_fields: dict[int, tuple[str, tuple, tuple]] = {}
_REMEMBERED_MAX = 1_000
_REMEMBERED_WEIGHT_MAX = 64 * 1024


def owned_task_detail(owner, pk: int) -> Task | None:
    """``owner``'s task ``pk`` (``None`` when it does not exist or is another user's)
    with what the API's detail shows: the ids of its tags and contacts
    (``include_tags_ids``, ``exclude_tags_ids``, ``contacts_ids``, in ascending order),
    its ``progress_counts`` (:func:`tasks_progress`) and its row's ``row_version``.

    Clients poll the detail while a task sends, so it costs one round trip, in
    statements written out (no queryset built per request) and prepared once per
    connection (planning them anew cost PostgreSQL more than running them). A task
    this process has read before is asked for its row's version only: while the
    version is the one remembered, the task's fields and relations are this process's
    copy — its bodies are most of the answer, and the relations' look-ups most of the
    statement — and when it changed, the whole task is read (a second round trip). A
    task read for the first time is read whole at once. Its progress is read with it,
    then at most once per ``EDM_PROGRESS_SECONDS`` (1; 0: every time) by this process
    while the row stays the same (:func:`_recent_counts`); a change of the row — its
    status, say — reads the progress at once, so a paused, cancelled or completed task
    is never shown with the counts of its sending. A sending task's progress is read
    apart (:func:`_sending_progress`)."""
    low, high = connection.ops.integer_field_range(Task._meta.pk.get_internal_type())
    if not low <= pk <= high:
        return None  # the URL takes any digits; the prepared statements' ids are bigints
    statements, attnames = _detail_statements()
    where = {"pk": pk, "owner": owner.pk}
    with_progress = {"sending": Task.Status.SENDING, **where}
    # The progress: this process's recent reading, or the two arrays a statement read.
    counts = progress_rows = None
    remembered = _remembered_fields.get(pk)
    if remembered is not None:
        version, values, relations = remembered
        counts = _recent_counts(pk)
        if counts is not None or values[attnames.index("status")] == Task.Status.SENDING:
            name, params = "edm_task_detail_version_only", where
        else:
            name, params = "edm_task_detail_version", with_progress
        row = fetch_prepared(name, statements[name], params)
        if row is None:
            return None
        if row[0] != version:
            remembered = counts = None
        progress_rows = row[1:]
    if remembered is None:
        row = fetch_prepared("edm_task_detail", statements["edm_task_detail"], with_progress)
        if row is None:
            return None
        fields = len(attnames) + 1
        version, values, relations = row[0], row[1:fields], row[fields : fields + 3]
        progress_rows = row[fields + 3 :]
        _remember(pk, version, values, relations)
    task = Task.from_db(connection.alias, attnames, values)
    task.row_version = version
    task.include_tags_ids, task.exclude_tags_ids, task.contacts_ids = relations
    if task.status == Task.Status.SENDING:
        task.progress_counts = _sending_progress(task.pk)
    else:
        task.progress_counts = counts if counts is not None else _read_counts(pk, *progress_rows)
    return task


def _read_counts(task_id: int, statuses, counts) -> dict[str, int]:
    """The task's progress from a statement's two arrays, kept as this process's latest
    reading."""
    progress = _no_progress()
    for status, n in zip(statuses or (), counts or (), strict=True):
        _add_progress(progress, status, n)
    _keep_counts(task_id, progress)
    return progress


def _remember(pk: int, version: str, values: tuple, relations: tuple) -> None:
    weight = sum(len(value) for value in values if isinstance(value, str))
    weight += 8 * sum(len(ids) for ids in relations)
    if weight > _REMEMBERED_WEIGHT_MAX:
        _remembered_fields.pop(pk, None)
        return
    if len(_remembered_fields) >= _REMEMBERED_MAX:
        _remembered_fields.clear()
    _remembered_fields[pk] = (version, values, relations)


# This process's latest progress reading of each task: (monotonic time, counts).
_recent_progress: dict[int, tuple[float, dict[str, int]]] = {}


def _recent_counts(task_id: int) -> dict[str, int] | None:
    """The task's progress as this process read it within ``EDM_PROGRESS_SECONDS``, or
    ``None``: pollers of one task share a reading a second per process."""
    ttl = settings.EDM_PROGRESS_SECONDS
    recent = _recent_progress.get(task_id)
    if ttl > 0 and recent is not None and time.monotonic() - recent[0] < ttl:
        return dict(recent[1])
    return None


def _keep_counts(task_id: int, counts: dict[str, int]) -> None:
    ttl = settings.EDM_PROGRESS_SECONDS
    if ttl <= 0:
        return
    now = time.monotonic()
    if len(_recent_progress) > 1000:
        for stale in [k for k, (at, _) in _recent_progress.items() if now - at >= ttl]:
            _recent_progress.pop(stale, None)
    _recent_progress[task_id] = (now, dict(counts))


def _sending_progress(task_id: int) -> dict[str, int]:
    """The progress of a task that is sending, read apart from the task and at most once
    per ``EDM_PROGRESS_SECONDS`` by this process (:func:`_recent_counts`): clients poll
    the detail of a sending task, hundreds of times a second for a busy dashboard, and
    while the dispatcher sends, a reading checks every message its live chunks passed
    (up to a few thousand index lookups on rows being written)."""
    counts = _recent_counts(task_id)
    if counts is None:
        counts = tasks_progress([task_id])[task_id]
        _keep_counts(task_id, counts)
    return counts


def task_progress(task: Task | int) -> dict[str, int]:
    """:func:`tasks_progress` of one task."""
    pk = getattr(task, "pk", task)
    return tasks_progress([pk])[pk]


def dlq_stats(*, owner=None) -> dict:
    """Dead-letter counts: ``{total, by_status: {…}, by_error_type: {…}}`` (pending and
    reprocessing entries by error type), optionally for one owner. Two index-backed
    aggregates, fast on 100,000+ entries."""
    where, params = ("WHERE owner_id = %s", [owner.pk]) if owner is not None else ("", [])
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT status, count(*) FROM dispatch_deadletter {where} GROUP BY status",
            params,
        )
        by_status = dict(cursor.fetchall())
        open_where = "AND owner_id = %s" if owner is not None else ""
        cursor.execute(
            "SELECT error_type, count(*) FROM dispatch_deadletter "
            f"WHERE status IN ('pending', 'reprocessing') {open_where} "
            "GROUP BY error_type ORDER BY count(*) DESC",
            params,
        )
        by_error_type = dict(cursor.fetchall())
    statuses = ("pending", "reprocessing", "resolved", "expired")
    return {
        "total": sum(by_status.values()),
        "by_status": {status: by_status.get(status, 0) for status in statuses},
        "by_error_type": by_error_type,
    }


def subtasks_for(task: Task | int, *, status: str | None = None):
    """The subtasks of a task, optionally of one status, in id order. Given the task
    itself, the primary-key walk starts at its ``subtask_id_floor``."""
    pk = getattr(task, "pk", task)
    queryset = SubTask.objects.filter(task_id=pk)
    floor = getattr(task, "subtask_id_floor", None)
    if floor is not None:
        queryset = queryset.filter(pk__gt=floor)
    if status:
        queryset = queryset.filter(status=status)
    return queryset.order_by("id")


def task_test_sends(task: Task | int, *, limit: int = 10):
    """The task's latest test sends, newest first."""
    pk = getattr(task, "pk", task)
    return TestSend.objects.filter(task_id=pk).select_related("service", "sent_by")[:limit]


# Why a matching contact does not receive a task: its status (``active`` receives), or an
# address on the owner's or the global suppression list.
SKIP_REASONS = ("unsubscribed", "bounced", "complained", "suppressed")


def task_audience(
    *, owner, include_tags=(), exclude_tags=(), contacts=()
) -> dict[str, int | dict[str, int]]:
    """Who a task with these recipients would send to, counted now: ``{"total",
    "recipients", "skipped": {reason: n}}`` — ``recipients`` of the ``total`` matching
    contacts receive it, the others are skipped for the reason named
    (:data:`SKIP_REASONS`; a contact that is not active counts under its status even if
    its address is also suppressed), exactly as queueing would decide. One statement.
    """
    from apps.deliverability.selectors import suppressed_sql, suppressions_exist

    owner_id = getattr(owner, "pk", owner)
    params = {
        "owner": owner_id,
        "explicit": sorted({int(getattr(c, "pk", c)) for c in contacts}),
        "include": sorted({int(getattr(t, "pk", t)) for t in include_tags}),
        "exclude": sorted({int(getattr(t, "pk", t)) for t in exclude_tags}),
    }
    suppressed = (
        suppressed_sql(owner="c.owner_id", email="c.email")
        if suppressions_exist(owner_id=owner_id)
        else "false"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT CASE WHEN c.status <> 'active' THEN c.status"
            f" WHEN {suppressed} THEN 'suppressed' ELSE 'active' END AS reason, count(*)"
            f" FROM contacts_contact c WHERE {RECIPIENTS_WHERE} GROUP BY 1",
            params,
        )
        by_reason = dict(cursor.fetchall())
    return {
        "total": int(sum(by_reason.values())),
        "recipients": int(by_reason.get("active", 0)),
        "skipped": {reason: int(by_reason.get(reason, 0)) for reason in SKIP_REASONS},
    }


def task_live_progress(task: Task) -> dict:
    """What the task page shows while it sends (polled): status, counts per status
    (:func:`task_progress`), the share done, the moments of its life and how long its
    first send waited after it was queued (``None`` until it has sent). Times are ISO
    8601; ``server_time`` lets the page measure its send rate on the database's clock.
    """
    from apps.monitoring.models import TaskWaitMetric

    task.refresh_from_db(fields=["status", "started_at", "completed_at", "queued_at", "total"])
    counts = task_progress(task)
    total = counts["total"]
    left = counts["pending"] + counts["allocated"] + counts["sending"]
    wait = (
        TaskWaitMetric.objects.filter(task_id=task.pk)
        .values_list("wait_seconds", flat=True)
        .first()
    )
    iso = lambda moment: moment.isoformat() if moment else None  # noqa: E731
    return {
        "id": task.pk,
        "status": task.status,
        "status_display": task.get_status_display(),
        "finished": task.is_finished,
        "progress": counts,
        "done": total - left,
        "left": left,
        "percent": round(100.0 * (total - left) / total, 1) if total else 0.0,
        "queued_at": iso(task.queued_at),
        "started_at": iso(task.started_at),
        "completed_at": iso(task.completed_at),
        "first_send_wait_seconds": round(wait, 3) if wait is not None else None,
        "server_time": timezone.now().isoformat(),
    }


# --- reads for monitoring ---------------------------------------------------------------
# Each is one or two statements on small tables or index ranges (live tasks, services,
# dispatcher slots, chunk rows), never a scan of the subtask table: the monitoring
# endpoints, the dashboard and every round of alert evaluation call them. "Now" is the
# statement's time (``statement_timestamp()``), not the transaction's: a reader inside a
# longer transaction still sees rows written just before it as written in the past.

# Not finished: the tasks monitoring watches (``Task.OPEN_STATUSES``).
LIVE_STATUSES = tuple(Task.OPEN_STATUSES)


def tasks_live(*, owner_id: int | None = None, finished_within: float = 0) -> list[dict]:
    """Tasks not finished (``scheduled|queued|sending|paused``), plus those finished in
    the last ``finished_within`` seconds, newest first: ``{id, name, owner_id, owner,
    status, total, priority, queued_at, scheduled_at, started_at, completed_at,
    waiting_since}``. ``waiting_since`` is when a task not yet served began waiting for
    its first send (``greatest(queued_at, scheduled_at)`` once that moment has come, or
    ``None``: served already, paused, or scheduled for later)."""
    params: dict = {"live": list(LIVE_STATUSES), "within": finished_within}
    owner = ""
    if owner_id is not None:
        owner = "AND t.owner_id = %(owner)s"
        params["owner"] = owner_id
    # Two index ranges (live statuses; recently finished), not one OR over the table.
    finished = (
        f"""UNION ALL SELECT t.id FROM dispatch_task t
            WHERE t.status IN ('completed', 'cancelled', 'failed') {owner}
              AND t.completed_at > statement_timestamp() - make_interval(secs => %(within)s)"""
        if finished_within > 0
        else ""
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT t.id, t.name, t.owner_id, u.username, t.status, t.total, t.priority,
                   t.queued_at, t.scheduled_at, t.started_at, t.completed_at,
                   CASE WHEN t.status IN ('queued', 'scheduled') AND t.started_at IS NULL
                             AND GREATEST(t.queued_at, t.scheduled_at) <= statement_timestamp()
                        THEN GREATEST(t.queued_at, t.scheduled_at) END
            FROM dispatch_task t JOIN {get_user_model()._meta.db_table} u ON u.id = t.owner_id
            WHERE t.id IN (SELECT t.id FROM dispatch_task t
                           WHERE t.status = ANY(%(live)s) {owner} {finished})
            ORDER BY t.id DESC
            """,
            params,
        )
        columns = (
            "id name owner_id owner status total priority queued_at scheduled_at "
            "started_at completed_at waiting_since"
        ).split()
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def tasks_queue_times(task_ids: list[int]) -> dict[int, dict]:
    """For each task: ``{ready_since, waiting, next_waiting_at}`` — when its oldest ready
    pending subtask became ready (``None``: nothing ready), how many pending subtasks wait
    for a later moment (retry back-off, a schedule; counted up to 100,000), and the
    earliest of those. Reads the ready index only."""
    if not task_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT u.task_id,
                   (SELECT s.next_attempt_at FROM dispatch_subtask s
                     WHERE s.task_id = u.task_id AND s.status = 'pending'
                       AND s.next_attempt_at <= statement_timestamp()
                     ORDER BY s.next_attempt_at LIMIT 1),
                   (SELECT count(*) FROM (SELECT 1 FROM dispatch_subtask s
                     WHERE s.task_id = u.task_id AND s.status = 'pending'
                       AND s.next_attempt_at > statement_timestamp() LIMIT 100000) w),
                   (SELECT s.next_attempt_at FROM dispatch_subtask s
                     WHERE s.task_id = u.task_id AND s.status = 'pending'
                       AND s.next_attempt_at > statement_timestamp()
                     ORDER BY s.next_attempt_at LIMIT 1)
            FROM unnest(%s::bigint[]) AS u(task_id)
            """,
            [sorted(set(task_ids))],
        )
        return {
            row[0]: {"ready_since": row[1], "waiting": row[2], "next_waiting_at": row[3]}
            for row in cursor.fetchall()
        }


def service_states() -> list[dict]:
    """Every email service with its state now — ``disabled`` (not enabled), ``held`` (a
    dispatcher is sending through it: a chunk row names it), ``exhausted`` (today's quota
    is used up), ``cooling`` (``next_available_at`` lies ahead) or ``ready`` — and its
    reservation (``held_by``: the chunk's holder, ``held_since``) and counters. One
    statement over the services (a small table) and the chunk rows in flight."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT s.id, s.name, p.name, s.is_enabled, s.disabled_reason, s.next_available_at,
                   s.next_available_at > statement_timestamp(),
                   s.daily_quota,
                   CASE WHEN s.quota_day = current_date THEN s.used_quota ELSE 0 END,
                   s.sending_rate, s.total_sent, s.total_failed, s.success_rate,
                   s.avg_response_time, s.last_sent_at, s.consecutive_failures,
                   k.holder, k.since, k.chunks
            FROM services_emailservice s JOIN services_pool p ON p.id = s.pool_id
            LEFT JOIN (SELECT service_id, min(holder) AS holder, min(started_at) AS since,
                              count(*) AS chunks
                       FROM dispatch_sendchunk GROUP BY service_id) k ON k.service_id = s.id
            ORDER BY s.name
            """
        )
        rows = cursor.fetchall()
    states = []
    for (pk, name, pool, enabled, reason, next_at, cooling, quota, used, rate, sent,
         failed, success, latency, last_sent, faults, holder, since, chunks) in rows:  # fmt: skip
        chunk = (holder, since, chunks) if chunks else None
        if not enabled:
            state = "disabled"
        elif chunk is not None:
            state = "held"
        elif quota and used >= quota:
            state = "exhausted"
        elif cooling:
            state = "cooling"
        else:
            state = "ready"
        states.append(
            {
                "id": pk,
                "name": name,
                "pool": pool,
                "state": state,
                "disabled_reason": reason,
                "next_available_at": next_at,
                "held_by": chunk[0] if chunk else None,
                "held_since": chunk[1] if chunk else None,
                "chunks": chunk[2] if chunk else 0,
                "daily_quota": quota,
                "used_today": used,
                "sending_rate": rate,
                "total_sent": sent,
                "total_failed": failed,
                "success_rate": success,
                "avg_response_time": latency,
                "last_sent_at": last_sent,
                "consecutive_failures": faults,
            }
        )
    return states


def dispatcher_slots() -> list[dict]:
    """The dispatcher slots, live or expired: ``{number, hostname, pid, started_at,
    heartbeat_at, live, heartbeat_age}`` (age in seconds, by the database's clock)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT number, hostname, pid, started_at, heartbeat_at, "
            "expires_at > statement_timestamp(), "
            "EXTRACT(EPOCH FROM statement_timestamp() - heartbeat_at)::float8 "
            "FROM dispatch_dispatcherslot ORDER BY number"
        )
        columns = "number hostname pid started_at heartbeat_at live heartbeat_age".split()
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def dead_letters_overview(*, since_seconds: float, owner_id: int | None = None) -> dict:
    """``{pending, entered, reprocessing}``: dead letters waiting for an operator, how
    many of them entered the queue (or entered it again) in the last ``since_seconds``,
    and how many are being reprocessed. Index reads only
    (``deadletter_pending_updated_idx``, ``deadletter_status_type_idx``)."""
    where, params = ("", {"since": since_seconds})
    if owner_id is not None:
        where = "AND owner_id = %(owner)s"
        params["owner"] = owner_id
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT count(*),
                   count(*) FILTER (WHERE updated_at
                                    > statement_timestamp() - make_interval(secs => %(since)s)),
                   (SELECT count(*) FROM dispatch_deadletter
                    WHERE status = 'reprocessing' {where})
            FROM dispatch_deadletter WHERE status = 'pending' {where}
            """,
            params,
        )
        pending, entered, reprocessing = cursor.fetchone()
    return {"pending": pending, "entered": entered, "reprocessing": reprocessing}


def progress_totals() -> dict[str, int]:
    """Subtasks by status over every stored task: one sum over the progress counters'
    rows (a few per task), never a count of the subtasks."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {progress.SUMS} FROM dispatch_progressdelta d")
        row = cursor.fetchone()
    return {status: int(value or 0) for status, value in zip(PROGRESS_KEYS, row, strict=True)}

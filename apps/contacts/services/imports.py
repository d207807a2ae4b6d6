"""CSV import jobs: queue an upload, run it (COPY into a staging table, merge), fail stale.

Each chunk of parsed rows (see ``apps.contacts.csv_import``) is stored in one
transaction: COPY into a session-local temp table, one ``INSERT … SELECT … ON CONFLICT
(owner_id, email) DO UPDATE … WHERE <something changed>`` merge, the memberships of the
requested tags (counts included, see ``sql``), the rejected rows, and the job's counters.
What the counters say is therefore exactly what is stored, and another connection sees
the progress live.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import BinaryIO

from django.db import connection, transaction
from django.utils import timezone
from django_q.tasks import async_task

from apps.contacts.csv_import import (
    CHUNK_ROWS,
    Chunk,
    ChunkReader,
    ImportFileError,
    read_ahead,
    read_header,
)
from apps.contacts.models import ContactImport
from apps.contacts.services.memberships import tag_add_contact_ids
from apps.contacts.services.sql import lock_tags
from apps.contacts.services.tags import clean_tag_name, tags_get_or_create
from apps.core.audit import actor_id, event_append
from apps.core.errors import ApplicationError
from apps.core.statistics import tables_analyze_if_grown

STAGE_TABLE = "contacts_import_stage"


def contact_import_create(
    *, owner, uploaded_file, tag_names: Sequence[str] = (), actor=None
) -> ContactImport:
    """Store an uploaded CSV and queue its import as a django-q2 job.

    The header is checked now, so a file that is empty, not CSV or without an e-mail
    column is refused at once (``ApplicationError`` on ``file``) and nothing is stored.
    The job is queued when the surrounding transaction commits.
    """
    if uploaded_file is None:
        raise ApplicationError("upload a CSV file", field="file")
    names = sorted({clean_tag_name(n) for n in tag_names})
    try:
        read_header(uploaded_file)
    except ImportFileError as exc:
        raise ApplicationError(str(exc), field="file") from exc
    with transaction.atomic():
        job = ContactImport.objects.create(
            owner=owner,
            created_by_id=actor_id(actor),
            file=uploaded_file,
            original_name=(getattr(uploaded_file, "name", "") or "")[:255],
            tag_names=names,
            bytes_total=uploaded_file.size or 0,
        )
        transaction.on_commit(lambda: _enqueue_import(job.pk))
    return job


def _enqueue_import(import_id: int) -> None:
    async_task(
        "apps.contacts.tasks.run_contact_import", import_id, task_name=f"contact-import-{import_id}"
    )


def contact_import_run(*, import_id: int, progress=None) -> ContactImport | None:
    """Run a queued import once. Returns the job, or ``None`` if it was already claimed.

    The claim is a conditional UPDATE (pending → running): a duplicated or retried q2
    job finds it taken and does nothing.
    """
    claimed = ContactImport.objects.filter(
        pk=import_id, status=ContactImport.Status.PENDING
    ).update(status=ContactImport.Status.RUNNING, started_at=timezone.now())
    if claimed != 1:
        return None
    job = ContactImport.objects.select_related("owner").get(pk=import_id)
    try:
        stored = job.file.open("rb")
    except OSError as exc:
        _fail(job, f"the uploaded file cannot be read: {exc.strerror or exc}")
        return job
    with stored:
        # The storage's own file object when there is one: faster line reads.
        return run_import(job, getattr(stored, "file", stored), progress=progress)


def contact_imports_fail_stale(*, older_than_seconds: int) -> int:
    """Mark imports still ``running`` after ``older_than_seconds`` as failed.

    A job runs longer than the q2 ``timeout`` only if its worker was killed; what it
    counted is stored (counters commit with their rows) and importing the same file again
    finishes it, leaving the rows already imported unchanged. Returns how many were marked.
    """
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    return ContactImport.objects.filter(
        status=ContactImport.Status.RUNNING, started_at__lt=cutoff
    ).update(
        status=ContactImport.Status.FAILED,
        error="interrupted: the import stopped before the end of the file; the counted rows"
        " are stored, import the file again to finish it",
        finished_at=timezone.now(),
    )


def contacts_import_file(
    *, owner, path: str, tag_names: Sequence[str] = (), progress=None
) -> ContactImport:
    """Import a CSV file from the local disk now (``manage.py import_contacts``).

    Raises ``ApplicationError`` (field ``file``) for a file-level problem; then nothing is
    imported. Otherwise returns the completed job with its counters.
    """
    names = sorted({clean_tag_name(n) for n in tag_names})
    with open(path, "rb") as stream:
        try:
            read_header(stream)
        except ImportFileError as exc:
            raise ApplicationError(str(exc), field="file") from exc
        size = os.fstat(stream.fileno()).st_size
        job = ContactImport.objects.create(
            owner=owner,
            original_name=os.path.basename(path)[:255],
            tag_names=names,
            bytes_total=size,
            status=ContactImport.Status.RUNNING,
            started_at=timezone.now(),
        )
        return run_import(job, stream, progress=progress)


# One INSERT cannot touch a row twice, so a chunk with a repeated address keeps only
# its last occurrence (the sort is skipped for the usual chunk without repeats).
_SOURCE_SQL = f"SELECT email, first_name, last_name, attributes FROM {STAGE_TABLE}"
_DEDUPLICATED_SOURCE_SQL = (
    "SELECT DISTINCT ON (email) email, first_name, last_name, attributes"
    f" FROM {STAGE_TABLE} ORDER BY email, line DESC"
)
_MERGE_SQL = """
WITH src AS MATERIALIZED ({source}), merged AS (
    INSERT INTO contacts_contact AS c (owner_id, email, first_name, last_name, attributes,
                                       status, source, created_at, updated_at)
    SELECT %(owner)s, email, first_name, last_name, attributes, {status}, %(source)s,
           now(), now()
    FROM src
    ON CONFLICT (owner_id, email) DO UPDATE SET
        first_name = COALESCE(NULLIF(excluded.first_name, ''), c.first_name),
        last_name = COALESCE(NULLIF(excluded.last_name, ''), c.last_name),
        attributes = c.attributes || excluded.attributes,
        updated_at = now()
    WHERE (c.first_name, c.last_name, c.attributes) IS DISTINCT FROM (
        COALESCE(NULLIF(excluded.first_name, ''), c.first_name),
        COALESCE(NULLIF(excluded.last_name, ''), c.last_name),
        c.attributes || excluded.attributes)
    RETURNING (c.xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM merged
"""


def _new_status_sql(owner_id: int) -> str:
    """The status a new contact starts with: ``active``, unless its address is suppressed
    as unsubscribed, bounced or complained (a re-import never reactivates it)."""
    from apps.deliverability.selectors import new_contact_status_sql, suppressions_exist

    if not suppressions_exist(owner_id=owner_id):
        return "'active'"
    return new_contact_status_sql(owner="%(owner)s", email="src.email")


def _merge_chunk(job: ContactImport, chunk: Chunk, tag_ids: list[int]) -> None:
    """Store one chunk and its counters in one transaction."""
    created = updated = 0
    with transaction.atomic(), connection.cursor() as cursor:
        if tag_ids:
            # Tags are locked before the contacts the merge updates: the lock order of
            # every writer (see ``services.contacts.contacts_delete``), so no deadlock.
            lock_tags(cursor, tag_ids)
        if chunk.good:
            cursor.execute(f"TRUNCATE {STAGE_TABLE}")
            with cursor.copy(
                f"COPY {STAGE_TABLE} (line, email, first_name, last_name, attributes) FROM STDIN"
            ) as copy:
                copy.write(chunk.copy_data)
            # An existing contact keeps its status and its non-empty names unless the
            # file gives new ones; attributes are merged. Rows that would not change are
            # not written, so re-importing a file reports 0 created and 0 updated.
            source = _DEDUPLICATED_SOURCE_SQL if chunk.has_duplicates else _SOURCE_SQL
            cursor.execute(
                _MERGE_SQL.format(source=source, status=_new_status_sql(job.owner_id)),
                {"owner": job.owner_id, "source": "import"},
            )
            created, updated = cursor.fetchone()
            if tag_ids:
                tag_add_contact_ids(
                    tag_ids=tag_ids,
                    contact_ids_sql=(
                        f"SELECT c.id FROM {STAGE_TABLE} s JOIN contacts_contact c"
                        " ON c.owner_id = %s AND c.email = s.email"
                    ),
                    params=[job.owner_id],
                )
        if chunk.rejected or chunk.skipped:
            # Rejected and skipped lines go to the same report, each with its reason.
            with cursor.copy(
                "COPY contacts_contactimportrejection (contact_import_id, line, reason, raw)"
                " FROM STDIN"
            ) as copy:
                for line, reason, raw in (*chunk.rejected, *chunk.skipped):
                    copy.write_row((job.pk, line, reason, raw))
        # A repeated address is merged once (its last line): the earlier lines are
        # skipped, not "unchanged".
        unchanged = chunk.good - chunk.superseded - created - updated
        skipped = len(chunk.skipped)
        cursor.execute(
            "UPDATE contacts_contactimport SET rows_read = rows_read + %s,"
            " rows_created = rows_created + %s, rows_updated = rows_updated + %s,"
            " rows_unchanged = rows_unchanged + %s, rows_rejected = rows_rejected + %s,"
            " rows_skipped = rows_skipped + %s, bytes_read = %s WHERE id = %s",
            [
                chunk.rows_read,
                created,
                updated,
                unchanged,
                len(chunk.rejected),
                skipped,
                chunk.bytes_read,
                job.pk,
            ],
        )
    job.rows_read += chunk.rows_read
    job.rows_created += created
    job.rows_updated += updated
    job.rows_unchanged += unchanged
    job.rows_rejected += len(chunk.rejected)
    job.rows_skipped += skipped
    job.bytes_read = chunk.bytes_read


def _fail(job: ContactImport, message: str) -> None:
    with transaction.atomic():
        job.status = ContactImport.Status.FAILED
        job.error = message
        job.finished_at = timezone.now()
        job.save(update_fields=["status", "error", "finished_at"])
        _completed_event(job)


def _completed_event(job: ContactImport) -> None:
    """``import.completed`` (failed ones too: ``status`` says which), by its starter."""
    event_append(
        "import.completed",
        owner=job.owner_id,
        actor=job.created_by_id,
        subject=job,
        payload={
            "status": job.status,
            "error": job.error[:500],
            "rows_read": job.rows_read,
            "created": job.rows_created,
            "updated": job.rows_updated,
            "unchanged": job.rows_unchanged,
            "rejected": job.rows_rejected,
            "skipped": job.rows_skipped,
        },
    )


def run_import(
    job: ContactImport,
    stream: BinaryIO,
    *,
    progress: Callable[[ContactImport], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> ContactImport:
    """Import ``stream`` into ``job``'s owner's contacts; returns the finished job.

    The job must already be claimed (status ``running``). A file-level problem marks the
    job ``failed`` with the reason and imports nothing; a database error after some
    chunks were committed marks it ``failed`` too, with the counters of what is stored.
    """
    try:
        reader = ChunkReader(stream, chunk_rows=chunk_rows)
        tags = tags_get_or_create(owner=job.owner, names=job.tag_names)
    except ImportFileError as exc:
        _fail(job, str(exc))
        return job
    except Exception as exc:
        _fail(job, f"{exc.__class__.__name__}: {exc}")
        raise
    tag_ids = [t.pk for t in tags]
    with connection.cursor() as cursor:
        # Session-local: concurrent imports on other connections never see each other's
        # rows, and no WAL is written for it.
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {STAGE_TABLE} (line integer, email text,"
            " first_name text, last_name text, attributes jsonb)"
        )
    try:
        for chunk in read_ahead(reader.chunks()):
            _merge_chunk(job, chunk, tag_ids)
            if progress is not None:
                progress(job)
    except Exception as exc:
        _fail(job, f"{exc.__class__.__name__}: {exc}")
        raise
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {STAGE_TABLE}")
    with transaction.atomic():
        job.status = ContactImport.Status.COMPLETED
        job.finished_at = timezone.now()
        job.save(update_fields=["status", "finished_at"])
        _completed_event(job)
    # The first pages after a large import would otherwise be planned for the old,
    # small table (``apps.core.statistics``).
    tables = ["contacts_contact", *(["contacts_contacttag"] if tag_ids else [])]
    tables_analyze_if_grown(tables=tables, added=job.rows_created + job.rows_updated)
    return job

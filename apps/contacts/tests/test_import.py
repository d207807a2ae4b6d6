from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django_q.models import OrmQ

from apps.contacts.csv_import import ChunkReader
from apps.contacts.models import Contact, ContactImport, ContactImportRejection, Tag
from apps.contacts.services import contact_import_create, contact_import_run, run_import
from apps.contacts.tasks import run_contact_import
from apps.core.errors import ApplicationError

pytestmark = pytest.mark.django_db

GOOD = (
    "Email,First Name,Last Name,city\n"
    "Ada@Example.com,Ada,Lovelace,London\n"
    "alan@example.com,Alan,Turing,\n"
)


def run_command(path: str, *args: str) -> str:
    out = io.StringIO()
    call_command("import_contacts", path, "--owner", "alice", "--no-progress", *args, stdout=out)
    return out.getvalue()


def test_import_creates_contacts_with_attributes_and_tags(user, write_csv):
    output = run_command(write_csv(GOOD), "--tag", "imported", "--tag", "2026")
    assert "created 2" in output and "rejected 0" in output
    ada = Contact.objects.get(owner=user, email="ada@example.com")
    assert (ada.first_name, ada.last_name) == ("Ada", "Lovelace")
    assert ada.attributes == {"city": "London"}
    assert Contact.objects.get(email="alan@example.com").attributes == {}
    assert {t.name: t.contact_count for t in Tag.objects.filter(owner=user)} == {
        "imported": 2,
        "2026": 2,
    }


def test_reimporting_the_same_file_changes_nothing(user, write_csv):
    path = write_csv(GOOD)
    run_command(path, "--tag", "imported")
    before = list(Contact.objects.order_by("pk").values_list("pk", "updated_at"))
    output = run_command(path, "--tag", "imported")
    assert "created 0, updated 0, unchanged 2" in output
    assert list(Contact.objects.order_by("pk").values_list("pk", "updated_at")) == before
    assert Tag.objects.get(name="imported").contact_count == 2


def test_a_changed_row_updates_and_empty_cells_keep_stored_values(user, write_csv):
    run_command(write_csv(GOOD))
    output = run_command(write_csv("email,first_name,last_name\nada@example.com,,Byron\n"))
    assert "updated 1" in output
    ada = Contact.objects.get(email="ada@example.com")
    assert (ada.first_name, ada.last_name, ada.attributes) == ("Ada", "Byron", {"city": "London"})


def test_bad_rows_are_rejected_with_line_numbers_and_good_rows_import(user, write_csv, tmp_path):
    content = (
        b"email,first_name,last_name\n"
        b"good1@example.com,A,B\n"
        b"not-an-email,A,B\n"
        b"good2@example.com,A\n"
        b"bad\xff@example.com,A,B\n"
        b"\n"
        b'good3@example.com,"multi\nline",B\n'
        b",A,B\n"
        b"good4@example.com,A,B\n"
    )
    report = tmp_path / "report.csv"
    output = run_command(write_csv(content), "--report", str(report))
    assert "created 3" in output and "rejected 4, skipped 1" in output
    rejected = dict(ContactImportRejection.objects.values_list("line", "reason"))
    assert rejected == {
        3: "invalid e-mail address 'not-an-email'",
        4: "expected 3 columns, found 2",
        5: "invalid UTF-8 text",
        6: "empty line: no record",
        9: "no e-mail address",
    }
    text = report.read_text()
    assert text.splitlines()[0] == "line,reason,raw" and "not-an-email" in text
    assert Contact.objects.get(email="good3@example.com").first_name == "multi\nline"


def test_duplicate_addresses_in_one_file_keep_the_last_row(user, write_csv):
    output = run_command(write_csv("email,first_name\na@example.com,First\nA@example.com,Last\n"))
    assert "created 1" in output
    assert Contact.objects.get().first_name == "Last"


def test_a_repeated_address_is_reported_as_skipped_not_unchanged(user, write_csv):
    content = "email,first_name\na@example.com,First\nb@example.com,B\nA@example.com,Last\n"
    output = run_command(write_csv(content))
    job = ContactImport.objects.get()
    assert (job.rows_read, job.rows_created, job.rows_unchanged, job.rows_skipped) == (3, 2, 0, 1)
    assert "created 2, updated 0, unchanged 0, rejected 0, skipped 1" in output
    (entry,) = job.rejections.all()
    assert (entry.line, entry.reason) == (2, "the same address as line 4, whose values are stored")
    assert Contact.objects.get(email="a@example.com").first_name == "Last"


def test_every_line_of_the_file_is_accounted_for(user, write_csv):
    content = "email\na@example.com\n\nnot-an-address\na@example.com\n\nb@example.com\n"
    run_command(write_csv(content))
    job = ContactImport.objects.get()
    stored = job.rows_created + job.rows_updated + job.rows_unchanged
    assert (stored, job.rows_rejected, job.rows_skipped) == (2, 1, 3)
    assert job.rows_read == stored + job.rows_rejected + job.rows_skipped == 6
    assert sorted(job.rejections.values_list("line", flat=True)) == [2, 3, 4, 6]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"\n\n", "the file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a CSV file: it contains binary data"),
        (b"\xff\xfeemail\n", "not a CSV file: the header line is not UTF-8"),
        (b"name,phone\nAda,123\n", "no e-mail column"),
    ],
)
def test_a_file_level_problem_fails_clearly_and_imports_nothing(user, write_csv, content, message):
    with pytest.raises(CommandError, match=message):
        run_command(write_csv(content))
    assert not Contact.objects.exists()
    assert not ContactImport.objects.exists()


def test_the_command_names_an_unknown_owner(write_csv, db):
    with pytest.raises(CommandError, match="--owner: no user named 'alice'"):
        run_command(write_csv(GOOD))


def test_progress_counters_are_committed_per_chunk(user):
    rows = "".join(f"p{i}@example.com,P{i}\n" for i in range(25))
    content = ("email,first_name\n" + rows + "broken,X\n").encode()
    job = ContactImport.objects.create(
        owner=user, status="running", bytes_total=len(content), tag_names=["t"]
    )
    seen = []
    run_import(
        job,
        io.BytesIO(content),
        progress=lambda j: seen.append(
            ContactImport.objects.values_list("rows_read", "bytes_read").get(pk=j.pk)
        ),
        chunk_rows=10,
    )
    assert [rows_read for rows_read, _ in seen] == [10, 20, 26]
    job.refresh_from_db()
    assert (job.status, job.rows_created, job.rows_rejected, job.percent) == (
        "completed",
        25,
        1,
        100.0,
    )
    assert Tag.objects.get(name="t").contact_count == 25


def test_chunk_reader_escapes_copy_special_characters(user):
    content = b'email,first_name,note\na@example.com,"back\\slash\ttab","q\\""x"\n'
    job = ContactImport.objects.create(owner=user, status="running")
    run_import(job, io.BytesIO(content))
    contact = Contact.objects.get()
    assert contact.first_name == "back\\slash\ttab"
    assert contact.attributes == {"note": 'q\\"x'}
    assert ChunkReader(io.BytesIO(b"email;name\n")).header.delimiter == ";"


def upload(content: bytes, name: str = "contacts.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="text/csv")


def test_an_upload_is_queued_on_commit_and_its_q2_job_runs_once(
    user, settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.MEDIA_ROOT = tmp_path
    with django_capture_on_commit_callbacks(execute=True):
        job = contact_import_create(
            owner=user, uploaded_file=upload(GOOD.encode()), tag_names=["web"]
        )
        assert not OrmQ.objects.exists()  # nothing is queued before the commit
    [queued] = OrmQ.objects.all()
    task = queued.task
    assert task["func"] == "apps.contacts.tasks.run_contact_import"
    assert run_contact_import(*task["args"]).startswith(f"import {job.pk}: completed")
    job.refresh_from_db()
    assert (job.status, job.rows_created, job.original_name) == ("completed", 2, "contacts.csv")
    assert Tag.objects.get(owner=user, name="web").contact_count == 2
    # A duplicated or retried job finds the import claimed and does nothing.
    assert run_contact_import(job.pk).endswith("already claimed")
    assert contact_import_run(import_id=job.pk) is None


def test_an_upload_without_email_column_is_refused_before_storing(user, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    with pytest.raises(ApplicationError, match="no e-mail column") as info:
        contact_import_create(owner=user, uploaded_file=upload(b"name\nAda\n"))
    assert info.value.field == "file"
    assert not ContactImport.objects.exists()


def test_an_import_whose_file_is_gone_fails_clearly(user, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    job = ContactImport.objects.create(owner=user, file="imports/missing.csv")
    job = contact_import_run(import_id=job.pk)
    assert job.status == "failed" and "cannot be read" in job.error


def test_imports_left_running_past_the_timeout_are_failed(user):
    from datetime import timedelta

    from django.utils import timezone

    from apps.contacts.tasks import fail_stale_imports

    old = ContactImport.objects.create(
        owner=user, status="running", started_at=timezone.now() - timedelta(hours=1)
    )
    fresh = ContactImport.objects.create(owner=user, status="running", started_at=timezone.now())
    assert fail_stale_imports() == "1 stale import(s) failed"
    old.refresh_from_db()
    fresh.refresh_from_db()
    assert (old.status, fresh.status) == ("failed", "running")
    assert "import the file again" in old.error


def test_a_large_import_refreshes_the_planners_statistics(user, write_csv):
    """Right after a bulk load the planner must know the table's size (else a tag's first
    page walks every contact of the owner): the import analyzes what it grew."""
    from django.db import connection

    rows = "".join(f"bulk{i}@example.com\n" for i in range(1500))
    run_command(write_csv("email\n" + rows), "--tag", "bulk")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, reltuples FROM pg_class WHERE relname IN"
            " ('contacts_contact', 'contacts_contacttag')"
        )
        known = dict(cursor.fetchall())
    assert known == {"contacts_contact": 1500, "contacts_contacttag": 1500}


def test_a_small_import_leaves_the_statistics_to_autovacuum(user, write_csv):
    from apps.core.statistics import tables_analyze_if_grown

    run_command(write_csv(GOOD))
    assert tables_analyze_if_grown(tables=["contacts_contact"], added=2) == []

"""``manage.py import_contacts FILE --owner USER [--tag NAME]...``: import a CSV file now.

Streams the file (memory stays flat), shows a progress bar, prints the counters and
writes the rejected and skipped rows (line, reason, raw) to ``--report`` when given. A file-level
problem (empty, not CSV, no e-mail column) is a ``CommandError`` and imports nothing.
"""

from __future__ import annotations

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from apps.contacts.csv_import import rejections_csv
from apps.contacts.services import contacts_import_file
from apps.core.errors import ApplicationError


class Command(BaseCommand):
    help = "Import contacts from a CSV file (header with an 'email' column) for one owner."

    def add_arguments(self, parser):
        parser.add_argument("file", help="path of the CSV file")
        parser.add_argument("--owner", required=True, help="username of the contacts' owner")
        parser.add_argument(
            "--tag",
            action="append",
            default=[],
            dest="tags",
            help="add every imported contact to this tag (created if missing); repeatable",
        )
        parser.add_argument("--report", help="write the rejected and skipped rows to this CSV file")
        parser.add_argument("--no-progress", action="store_true", help="do not draw a progress bar")

    def handle(self, *args, file, owner, tags, report, no_progress, **options):
        try:
            user = get_user_model().objects.get(username=owner)
        except get_user_model().DoesNotExist as exc:
            raise CommandError(f"--owner: no user named {owner!r}") from exc
        if not os.path.isfile(file):
            raise CommandError(f"FILE: {file!r} is not a readable file")
        bar = None
        if not no_progress:
            from tqdm import tqdm

            bar = tqdm(
                total=os.path.getsize(file),
                unit="B",
                unit_scale=True,
                desc="import",
                file=self.stderr._out,
            )

        def progress(job) -> None:
            if bar is not None:
                bar.update(job.bytes_read - bar.n)
                bar.set_postfix(rows=job.rows_read, rejected=job.rows_rejected, refresh=False)

        try:
            job = contacts_import_file(owner=user, path=file, tag_names=tags, progress=progress)
        except ApplicationError as exc:
            raise CommandError(f"{file}: {exc.message}") from exc
        finally:
            if bar is not None:
                bar.close()
        if job.status != job.Status.COMPLETED:
            raise CommandError(f"{file}: import failed: {job.error}")
        self.stdout.write(
            f"import #{job.pk}: read {job.rows_read} rows: created {job.rows_created}, "
            f"updated {job.rows_updated}, unchanged {job.rows_unchanged}, "
            f"rejected {job.rows_rejected}, skipped {job.rows_skipped}"
        )
        if report and (job.rows_rejected or job.rows_skipped):
            with open(report, "w", encoding="utf-8", newline="") as out:
                for text in rejections_csv(job):
                    out.write(text)
            self.stdout.write(f"rejected and skipped rows written to {report}")
        elif job.rows_rejected or job.rows_skipped:
            first = job.rejections.order_by("line")[:5]
            for rejection in first:
                self.stdout.write(f"  line {rejection.line}: {rejection.reason}")
            self.stdout.write("  (use --report FILE for the full list)")

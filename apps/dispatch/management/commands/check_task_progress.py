"""``manage.py check_task_progress [--repair] [--task ID ...]``.

Proves that every task's progress counters (the rows the triggers append, see
``apps.dispatch.progress``) equal a count of its subtasks, in one snapshot, so it is
exact while dispatchers send. Without ``--repair`` a difference is a ``CommandError``
(exit status 1) listing it; with ``--repair`` the tasks concerned are recounted under
lock, then checked again.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from apps.dispatch import progress


class Command(BaseCommand):
    help = "Check (and with --repair fix) that task progress counters match the subtasks."

    def add_arguments(self, parser):
        parser.add_argument("--repair", action="store_true", help="recount what differs")
        parser.add_argument(
            "--task", type=int, action="append", dest="tasks", help="only this task (repeatable)"
        )

    def handle(self, *args, repair, tasks, **options):
        found = progress.mismatches(tasks)
        if not found:
            self.stdout.write(self.style.SUCCESS("OK: every task's progress counters are exact"))
            return
        for task_id, status, counted, summed in found[:50]:
            self.stdout.write(f"task #{task_id} {status}: counters {summed}, subtasks {counted}")
        if len(found) > 50:
            self.stdout.write(f"... and {len(found) - 50} more")
        if not repair:
            raise CommandError("progress counters differ; run with --repair to recount them")
        wrong = sorted({row[0] for row in found})
        written = progress.rebuild(wrong)
        self.stdout.write(f"recounted {len(wrong)} task(s) ({written} rows)")
        if progress.mismatches(wrong):
            raise CommandError("still different after the recount")
        self.stdout.write(self.style.SUCCESS("repaired: every task's progress counters are exact"))

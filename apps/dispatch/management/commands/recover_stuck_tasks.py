"""``manage.py recover_stuck_tasks``: one pass of stuck-work recovery (safe on every node)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from apps.dispatch.recovery import recover_stuck


class Command(BaseCommand):
    help = "Release expired leases, report in-flight messages as unknown, re-queue stuck tasks."

    def handle(self, *args, **options):
        result = recover_stuck()
        if result["skipped"]:
            self.stdout.write("another recovery pass is running; nothing done")
            return
        self.stdout.write(
            f"released {result['released']} allocated subtasks; "
            f"{result['unknown']} unknown, {result['resent']} resent; "
            f"re-queued tasks: {result['requeued_tasks'] or 'none'}; "
            f"completed tasks: {result['completed_tasks'] or 'none'}"
        )

"""Dead-letter policy jobs: automatic reprocessing and retention."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from apps.config.selectors import config_get
from apps.dispatch.models import DeadLetter, Task
from apps.dispatch.services import _reprocess

# An entry reprocessed this many times automatically is left for an operator.
AUTO_REPROCESS_LIMIT = 3


@transaction.atomic
def dead_letters_auto_reprocess() -> int:
    """With ``dlq.auto_reprocess_after`` > 0, reprocess pending entries older than that
    (at most ``AUTO_REPROCESS_LIMIT`` times each; then they are marked ``expired``)."""
    delay = float(config_get("dlq.auto_reprocess_after"))
    if delay <= 0:
        return 0
    due = DeadLetter.objects.filter(
        status=DeadLetter.Status.PENDING,
        updated_at__lt=timezone.now() - timedelta(seconds=delay),
    ).exclude(task__status__in=Task.STOPPED_STATUSES)
    due.filter(reprocess_count__gte=AUTO_REPROCESS_LIMIT).update(
        status=DeadLetter.Status.EXPIRED, updated_at=timezone.now()
    )
    return _reprocess(due.filter(reprocess_count__lt=AUTO_REPROCESS_LIMIT))


def dead_letters_cleanup() -> int:
    """Delete resolved and expired entries older than ``dlq.retention_days``."""
    days = int(config_get("dlq.retention_days"))
    deleted, _ = DeadLetter.objects.filter(
        status__in=[DeadLetter.Status.RESOLVED, DeadLetter.Status.EXPIRED],
        updated_at__lt=timezone.now() - timedelta(days=days),
    ).delete()
    return deleted

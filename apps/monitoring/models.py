"""Models of the monitoring app."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class TaskWaitMetric(models.Model):
    """How long a task waited from entering the queue to its first send.

    Written once per task by the dispatcher (``INSERT … ON CONFLICT DO NOTHING``) when the
    first message of the task is accepted by a service.
    """

    task = models.OneToOneField(
        "dispatch.Task", on_delete=models.CASCADE, primary_key=True, related_name="wait_metric"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
    )
    queued_at = models.DateTimeField()
    first_sent_at = models.DateTimeField()
    wait_seconds = models.FloatField()

    class Meta:
        indexes = [models.Index(fields=["-first_sent_at"], name="taskwait_first_sent_idx")]

    def __str__(self) -> str:
        return f"task {self.task_id}: {self.wait_seconds:.3f}s"

"""Demo data of the dispatch app: one small welcome task for the demo user, queued."""

from __future__ import annotations

from apps.contacts.models import Tag
from apps.dispatch import services
from apps.dispatch.models import Task
from apps.services.models import Pool

DEMO_TASK_NAME = "Welcome (demo)"


def seed(*, operator, user) -> str:
    """Queue one personalized task to the demo user's tagged contacts through the
    default pool; idempotent (an existing demo task is left as it is)."""
    existing = Task.objects.filter(owner=user, name=DEMO_TASK_NAME).first()
    if existing is not None:
        return f"demo task already there ({existing.status})"
    tags = list(Tag.objects.filter(owner=user, contact_count__gt=0).values_list("pk", flat=True))
    if not tags:
        tags = list(
            Tag.objects.filter(owner=user, memberships__isnull=False)
            .values_list("pk", flat=True).distinct()
        )
    if not tags:
        return "no tagged contacts for the demo user; no demo task"
    if not Pool.objects.filter(name=Pool.DEFAULT_NAME).exists():
        return "no default pool; no demo task"
    task = services.task_create(
        owner=user,
        name=DEMO_TASK_NAME,
        subject="Welcome, {{ contact.first_name|default:'friend' }}!",
        body_text=(
            "Hello {{ contact.first_name|default:'there' }},\n\n"
            "This is EDM's demo task. Your city: {{ contact.attributes.city|default:'unknown' }}."
            "\n"
        ),
        body_html=(
            "<p>Hello {{ contact.first_name|default:'there' }},</p>"
            "<p>This is EDM's demo task.</p>"
        ),
        include_tags=tags,
    )
    task = services.task_queue(task=task)
    return f"queued demo task {task.pk} to {task.total} recipient(s)"

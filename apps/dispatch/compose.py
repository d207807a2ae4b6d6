"""Composing a task: create, change and duplicate drafts, preview, send a test.

One set of rules for the API and the admin: :func:`task_fields_clean` validates every
field a person or a program gives (templates with their line, recipients and pool of
the owner, priority), :func:`task_create` and :func:`task_update` save through it.

What may change when (:func:`task_update`):

* a ``draft`` — everything;
* a ``paused`` task that has not sent anything yet — its content (name, subject, from
  name, bodies): no dispatcher holds it, and none has rendered it;
* any other task — only its name: once a task may be sending, its content is what its
  recipients get, and changing it would make one campaign two.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from apps.contacts.models import Contact, Tag
from apps.core.audit import event_append
from apps.core.errors import ApplicationError
from apps.dispatch.mime import build_message, make_message_id
from apps.dispatch.models import Task, TestSend
from apps.dispatch.selectors import task_progress
from apps.dispatch.templates import CompiledTask, task_validate_templates
from apps.services.models import EmailService, Pool
from apps.services.selectors import pool_for_task
from apps.services.senders import SendError, sender_for
from apps.services.services import service_reserve_one

CONTENT_FIELDS = ("name", "subject", "from_name", "body_text", "body_html")
DRAFT_FIELDS = (
    *CONTENT_FIELDS,
    "include_tags",
    "exclude_tags",
    "contacts",
    "pool",
    "priority",
    "scheduled_at",
    "tracking",
)
# The contact of a preview or a test when none is chosen and the audience is empty.
SAMPLE_CONTACT = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "email": "ada.lovelace@example.com",
    "attributes": {"city": "London"},
}


def _ids(values: Iterable, *, field: str) -> list[int]:
    ids = []
    for value in values or ():
        pk = getattr(value, "pk", value)
        try:
            ids.append(int(pk))
        except (TypeError, ValueError):
            raise ValidationError({field: [f"{value!r} is not an id"]}) from None
    return sorted(set(ids))


def _owned(model, ids: list[int], *, owner, field: str) -> list[int]:
    found = set(model.objects.filter(owner=owner, pk__in=ids).values_list("pk", flat=True))
    missing = [pk for pk in ids if pk not in found]
    if missing:
        raise ValidationError({field: [f"unknown id(s): {', '.join(map(str, missing))}"]})
    return ids


def task_fields_clean(*, owner, fields: dict[str, Any]) -> dict[str, Any]:
    """The given task fields, checked and normalised: the same rules for every edge.

    Raises ``ValidationError`` naming the field: an empty name, a template that does not
    parse (with its line), tags or contacts that are not the owner's, no recipients at
    all, a pool that is not open to the owner, a priority out of range. Only the keys
    given are checked and returned (templates and recipients as a whole when any part is
    given: pass the full set).
    """
    clean: dict[str, Any] = {}
    if "name" in fields:
        name = (fields["name"] or "").strip()
        if not name:
            raise ValidationError({"name": ["the name may not be empty"]})
        if len(name) > 200:
            raise ValidationError({"name": ["at most 200 characters"]})
        clean["name"] = name
    if {"subject", "body_text", "body_html"} & set(fields):
        task_validate_templates(
            subject=fields.get("subject") or "",
            body_text=fields.get("body_text") or "",
            body_html=fields.get("body_html") or "",
        )
        for key in ("subject", "body_text", "body_html"):
            clean[key] = fields.get(key) or ""
    if "from_name" in fields:
        from_name = (fields["from_name"] or "").strip()
        if "\n" in from_name or "\r" in from_name or len(from_name) > 150:
            raise ValidationError({"from_name": ["one line of at most 150 characters"]})
        clean["from_name"] = from_name
    if "priority" in fields:
        try:
            priority = int(fields["priority"] or 0)
        except (TypeError, ValueError):
            raise ValidationError({"priority": ["priority must be a whole number"]}) from None
        if not -100 <= priority <= 100:
            raise ValidationError({"priority": ["priority must be between -100 and 100"]})
        clean["priority"] = priority
    if {"include_tags", "exclude_tags", "contacts"} & set(fields):
        tags = {
            name: _owned(Tag, _ids(fields.get(name), field=name), owner=owner, field=name)
            for name in ("include_tags", "exclude_tags")
        }
        explicit = _owned(
            Contact, _ids(fields.get("contacts"), field="contacts"), owner=owner, field="contacts"
        )
        if not tags["include_tags"] and not explicit:
            raise ValidationError({"include_tags": ["give tags to include or contacts"]})
        clean.update(tags, contacts=explicit)
    if "pool" in fields:
        try:
            clean["pool"] = pool_for_task(owner=owner, ref=fields["pool"])
        except ApplicationError as exc:
            raise ValidationError({"pool": [exc.message]}) from None
    if "scheduled_at" in fields:
        clean["scheduled_at"] = fields["scheduled_at"] or None
    if "tracking" in fields:
        clean["tracking"] = bool(fields["tracking"])
    return clean


@transaction.atomic
def task_create(
    *,
    owner,
    name: str,
    subject: str,
    body_text: str = "",
    body_html: str = "",
    from_name: str = "",
    include_tags: Iterable = (),
    exclude_tags: Iterable = (),
    contacts: Iterable = (),
    pool: Pool | int | str | None = None,
    priority: int = 0,
    scheduled_at: datetime | None = None,
    tracking: bool = True,
    actor=None,
    duplicate_of: int | None = None,
) -> Task:
    """Create a draft task (``task.created`` by ``actor``); raises ``ValidationError``
    naming the field (:func:`task_fields_clean`). ``tracking``: count opens and clicks
    (the deliverability app's pixel and signed redirects)."""
    clean = task_fields_clean(
        owner=owner,
        fields={
            "name": name,
            "subject": subject,
            "body_text": body_text,
            "body_html": body_html,
            "from_name": from_name,
            "include_tags": include_tags,
            "exclude_tags": exclude_tags,
            "contacts": contacts,
            "pool": pool,
            "priority": priority,
            "scheduled_at": scheduled_at,
            "tracking": tracking,
        },
    )
    relations = {key: clean.pop(key) for key in ("include_tags", "exclude_tags", "contacts")}
    task = Task.objects.create(owner=owner, **clean)
    for key, ids in relations.items():
        getattr(task, key).set(ids)
    event_append(
        "task.created",
        owner=owner,
        actor=actor,
        subject=task,
        payload={"name": task.name, "duplicate_of": duplicate_of},
    )
    return task


def task_has_sent(task: Task) -> bool:
    """Whether any of the task's messages was claimed, attempted or sent."""
    if task.started_at is not None:
        return True
    counts = task_progress(task)
    untouched = counts["pending"] + counts["skipped"] + counts["cancelled"]
    return counts["total"] > untouched


def task_editable_fields(task: Task) -> tuple[str, ...]:
    """The fields of ``task`` that :func:`task_update` accepts now (module docstring)."""
    if task.status == Task.Status.DRAFT:
        return DRAFT_FIELDS
    if task.status == Task.Status.PAUSED and not task_has_sent(task):
        return CONTENT_FIELDS
    return ("name",)


@transaction.atomic
def task_update(*, task: Task | int, fields: dict[str, Any], actor=None) -> Task:
    """Change the given fields of a task, as far as its state allows (module docstring).

    Raises ``ApplicationError`` (field ``status``) naming what may no longer change, and
    ``ValidationError`` naming a bad field; nothing is saved then.
    """
    pk = getattr(task, "pk", task)
    locked = Task.objects.select_for_update(no_key=True).filter(pk=pk).first()
    if locked is None:
        raise ApplicationError(f"task {pk} does not exist", field="task")
    allowed = task_editable_fields(locked)
    refused = sorted(set(fields) - set(allowed))
    if refused:
        why = (
            "it has started sending"
            if locked.status != Task.Status.DRAFT and task_has_sent(locked)
            else f"it is {locked.status} (pause it first)"
        )
        raise ApplicationError(
            f"{', '.join(refused)} of this task can no longer change: {why}", field="status"
        )
    if {"subject", "body_text", "body_html"} & set(fields):
        fields = {
            "subject": locked.subject,
            "body_text": locked.body_text,
            "body_html": locked.body_html,
            **fields,
        }
    if {"include_tags", "exclude_tags", "contacts"} & set(fields):
        current = {
            "include_tags": list(locked.include_tags.values_list("pk", flat=True)),
            "exclude_tags": list(locked.exclude_tags.values_list("pk", flat=True)),
            "contacts": list(locked.contacts.values_list("pk", flat=True)),
        }
        fields = {**current, **fields}
    clean = task_fields_clean(owner=locked.owner, fields=fields)
    relations = {
        key: clean.pop(key) for key in ("include_tags", "exclude_tags", "contacts") if key in clean
    }
    for key, value in clean.items():
        setattr(locked, key, value)
    locked.save(update_fields=[*clean, "updated_at"])
    for key, ids in relations.items():
        getattr(locked, key).set(ids)
    event_append(
        "task.changed",
        owner=locked.owner_id,
        actor=actor,
        subject=locked,
        payload={"fields": sorted([*clean, *relations])},
    )
    if isinstance(task, Task):
        task.refresh_from_db()
        return task
    return locked


@transaction.atomic
def task_delete(*, task: Task | int, actor=None) -> None:
    """Delete a draft (a queued task is a record of what was sent: cancel it instead).
    Recorded as ``task.deleted``. Raises ``ApplicationError``
    for a task that is not a draft."""
    pk = getattr(task, "pk", task)
    locked = Task.objects.select_for_update().filter(pk=pk).first()
    if locked is None:
        raise ApplicationError(f"task {pk} does not exist", field="task")
    if locked.status != Task.Status.DRAFT:
        raise ApplicationError(f"a {locked.status} task cannot be deleted", field="status")
    event_append(
        "task.deleted",
        owner=locked.owner_id,
        actor=actor,
        subject=locked,
        payload={"previous_status": locked.status, "name": locked.name},
    )
    locked.delete()


@transaction.atomic
def task_duplicate(*, task: Task, actor=None) -> Task:
    """A new draft with the task's content, recipients, pool and priority (not its
    schedule), named "<name> (copy)"; the owner's tags and contacts are checked again."""
    name = f"{task.name} (copy)"
    return task_create(
        owner=task.owner,
        name=name if len(name) <= 200 else name[:200],
        subject=task.subject,
        body_text=task.body_text,
        body_html=task.body_html,
        from_name=task.from_name,
        include_tags=task.include_tags.values_list("pk", flat=True),
        exclude_tags=task.exclude_tags.values_list("pk", flat=True),
        contacts=task.contacts.values_list("pk", flat=True),
        pool=task.pool_id,
        priority=task.priority,
        tracking=task.tracking,
        actor=actor,
        duplicate_of=task.pk,
    )


def contact_as_context(contact: Contact | None) -> dict[str, Any]:
    """A contact as the templates see it (``contact.first_name``…), the dispatcher's
    shape; the sample contact for ``None``."""
    if contact is None:
        return dict(SAMPLE_CONTACT)
    return {
        "first_name": contact.first_name or "",
        "last_name": contact.last_name or "",
        "email": contact.email or "",
        "attributes": contact.attributes or {},
    }


@dataclass(frozen=True)
class Preview:
    subject: str
    text: str
    html: str
    from_name: str
    to: str

    def as_dict(self) -> dict[str, str]:
        return {
            "subject": self.subject,
            "text": self.text,
            "html": self.html,
            "from_name": self.from_name,
            "to": self.to,
        }


def task_preview(
    *,
    subject: str,
    body_text: str = "",
    body_html: str = "",
    from_name: str = "",
    contact: Contact | None = None,
) -> Preview:
    """The message as ``contact`` (or the sample contact) would get it, rendered exactly
    as the dispatcher renders it. Raises ``ValidationError`` naming the template field
    and its line when one does not parse."""
    task_validate_templates(subject=subject, body_text=body_text, body_html=body_html)
    compiled = CompiledTask.compile(
        subject=subject, body_text=body_text, body_html=body_html, from_name=from_name
    )
    context = contact_as_context(contact)
    rendered_subject, text, html = compiled.render(context)
    return Preview(
        subject=rendered_subject, text=text, html=html, from_name=from_name, to=context["email"]
    )


def _service_for_test(task: Task, service: EmailService | int) -> EmailService:
    pk = getattr(service, "pk", service)
    found = EmailService.objects.filter(pk=pk, pool_id=task.pool_id).first()
    if found is None:
        raise ApplicationError(
            f"service {pk} is not a service of the task's pool {task.pool.name!r}",
            field="service",
        )
    return found


def task_send_test(
    *,
    task: Task,
    to_email: str,
    service: EmailService | int,
    contact: Contact | None = None,
    sent_by=None,
    timeout: float = 15.0,
) -> TestSend:
    """Send one test message of ``task`` to ``to_email`` through ``service`` (one of the
    task's pool), rendered for ``contact`` (one of the owner's; the sample contact by
    default), and record it (:class:`~apps.dispatch.models.TestSend`).

    The test is never part of the task: no subtask, no progress. It uses one slot of the
    service (its rate and daily quota are real), waiting a few seconds for one if the
    service is busy. Its subject starts with "[Test]" and it carries ``X-EDM-Test: 1``.
    Returns the record, whose ``ok``/``error`` say how it went (a refusal by the server
    is recorded, not raised). Raises ``ApplicationError`` naming the field for a bad
    address, a service outside the pool, a contact of another owner, or a service that
    cannot send now (disabled, quota used up, busy).
    """
    from apps.contacts.emails import normalize_email

    address = normalize_email(to_email)
    if address is None:
        raise ApplicationError(f"{to_email!r} is not an e-mail address", field="to_email")
    if contact is not None and contact.owner_id != task.owner_id:
        raise ApplicationError("unknown contact", field="contact")
    chosen = _service_for_test(task, service)
    try:
        preview = task_preview(
            subject=task.subject,
            body_text=task.body_text,
            body_html=task.body_html,
            from_name=task.from_name,
            contact=contact,
        )
    except ValidationError as exc:
        field, reasons = next(iter(exc.message_dict.items()))
        raise ApplicationError(f"{field}: {reasons[0]}", field=field) from None
    domain = chosen.from_email.rpartition("@")[2] or "edm.localhost"
    message_id = make_message_id(domain if domain.replace(".", "").isalnum() else "edm.localhost")
    subject = f"[Test] {preview.subject}"
    record = TestSend(
        task=task,
        owner_id=task.owner_id,
        service=chosen,
        sent_by=sent_by if getattr(sent_by, "pk", None) else None,
        to_email=address,
        contact_id=getattr(contact, "pk", None),
        subject=subject,
        message_id=message_id,
    )
    message = build_message(
        from_email=chosen.from_email,
        from_name=task.from_name or chosen.from_name,
        to=address,
        subject=subject,
        text=preview.text,
        html=preview.html,
        message_id=message_id,
        headers={"X-EDM-Test": "1"},
    )
    service_reserve_one(service_id=chosen.pk)
    started = time.monotonic()
    try:
        sender = sender_for(chosen, timeout=timeout)
        sender.open()
        try:
            sender.send(from_addr=chosen.from_email, to_addrs=[address], message=message)
        finally:
            sender.close()
    except SendError as exc:
        record.error = f"{exc.kind}: {exc.message}"[:2000]
    else:
        record.ok = True
    record.error = record.error or ""
    record.save()
    record.elapsed = time.monotonic() - started
    return record

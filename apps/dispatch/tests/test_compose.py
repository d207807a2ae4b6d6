"""Composing a task: the rules of what may change, the audience, the preview, test sends,
and the admin's forms and buttons that use them."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from apps.contacts.models import Contact, Tag
from apps.core.errors import ApplicationError
from apps.core.services import tenant_create
from apps.dispatch import compose, services
from apps.dispatch.models import SubTask, Task, TestSend
from apps.dispatch.selectors import task_audience, task_progress
from apps.dispatch.tests.helpers import queue_task
from apps.events.models import Event
from apps.services.models import EmailService, Pool


@pytest.fixture
def draft(user, pool, make_contacts) -> Task:
    make_contacts(user, 4)
    return services.task_create(
        owner=user,
        name="Draft",
        subject="Hi {{ contact.first_name }}",
        body_text="Text for {{ contact.attributes.city }}",
        body_html="<p>{{ contact.first_name }}</p>",
        include_tags=[Tag.objects.get(owner=user, name="list").pk],
    )


# --- what may change when ------------------------------------------------------------------


def test_a_draft_changes_in_every_field(draft, user, make_contacts):
    extra = make_contacts(user, 1, tag="other", prefix="x")
    compose.task_update(
        task=draft,
        fields={"subject": "New", "contacts": [extra[0].pk], "priority": 5},
    )
    assert (draft.subject, draft.priority) == ("New", 5)
    assert list(draft.contacts.values_list("pk", flat=True)) == [extra[0].pk]
    assert draft.body_text == "Text for {{ contact.attributes.city }}"  # kept


def test_template_errors_name_the_field_and_the_line(draft):
    with pytest.raises(ValidationError) as caught:
        compose.task_update(task=draft, fields={"body_html": "<p>\n{% for %}</p>"})
    assert "line 2" in caught.value.message_dict["body_html"][0]


def test_a_queued_task_changes_only_its_name(draft):
    services.task_queue(task=draft)
    compose.task_update(task=draft, fields={"name": "Renamed"})
    with pytest.raises(ApplicationError, match="subject of this task can no longer change"):
        compose.task_update(task=draft, fields={"subject": "Other"})
    draft.refresh_from_db()
    assert (draft.name, draft.subject) == ("Renamed", "Hi {{ contact.first_name }}")


def test_a_paused_task_that_sent_nothing_takes_new_content_but_not_new_recipients(draft):
    services.task_queue(task=draft)
    services.task_pause(task=draft)
    compose.task_update(task=draft, fields={"subject": "Better subject"})
    assert draft.subject == "Better subject"
    with pytest.raises(ApplicationError, match="include_tags"):
        compose.task_update(task=draft, fields={"include_tags": []})


def test_content_is_refused_once_the_task_has_started_sending(draft):
    services.task_queue(task=draft)
    SubTask.objects.filter(task=draft).order_by("pk").filter(
        pk=SubTask.objects.filter(task=draft).order_by("pk").first().pk
    ).update(status="sent")
    services.task_pause(task=draft)
    with pytest.raises(ApplicationError, match="it has started sending"):
        compose.task_update(task=draft, fields={"body_text": "changed"})


def test_duplicate_makes_a_new_draft_with_the_same_content_and_recipients(draft):
    services.task_queue(task=draft)
    copy = compose.task_duplicate(task=draft)
    assert copy.pk != draft.pk and copy.status == Task.Status.DRAFT
    assert (copy.name, copy.subject, copy.pool_id) == ("Draft (copy)", draft.subject, draft.pool_id)
    assert list(copy.include_tags.all()) == list(draft.include_tags.all())


# --- audience and preview ----------------------------------------------------------------


def test_the_audience_counts_recipients_and_skips_by_reason(user, pool, make_contacts):
    from apps.deliverability.models import Suppression

    listed = make_contacts(user, 3)
    # An address on the suppression list (its contact still reads active).
    Suppression.objects.create(owner=user, email=listed[0].email, reason="manual")
    make_contacts(user, 2, prefix="u", status="unsubscribed")
    make_contacts(user, 1, prefix="b", status="bounced")
    blocked = make_contacts(user, 1, prefix="z", tag="blocked")[0]
    Tag.objects.get(owner=user, name="list").memberships.create(contact=blocked)
    explicit = make_contacts(user, 1, prefix="e", tag=None)[0]
    tags = {t.name: t.pk for t in Tag.objects.filter(owner=user)}
    audience = task_audience(
        owner=user,
        include_tags=[tags["list"]],
        exclude_tags=[tags["blocked"]],
        contacts=[explicit.pk],
    )
    assert audience == {
        "total": 7,
        "recipients": 3,
        "skipped": {"unsubscribed": 2, "bounced": 1, "complained": 0, "suppressed": 1},
    }
    task = services.task_create(
        owner=user,
        name="t",
        subject="s",
        body_text="b",
        include_tags=[tags["list"]],
        exclude_tags=[tags["blocked"]],
        contacts=[explicit.pk],
    )
    services.task_queue(task=task)
    progress = task_progress(task)
    # Queueing decides exactly as the audience said.
    assert (progress["total"], progress["pending"], progress["skipped"]) == (7, 3, 4)


def test_the_preview_renders_as_the_dispatcher_does(draft, user):
    contact = Contact.objects.filter(owner=user).order_by("pk").first()
    contact.attributes["city"] = "Rome <&>"
    preview = compose.task_preview(
        subject=draft.subject,
        body_text=draft.body_text,
        body_html="<p>{{ contact.first_name }} & co in {{ contact.attributes.city }}</p>",
        contact=contact,
    )
    assert preview.subject == f"Hi {contact.first_name}"
    assert preview.text == "Text for Rome <&>"  # text: never escaped
    assert preview.html == f"<p>{contact.first_name} & co in Rome &lt;&amp;&gt;</p>"
    assert compose.task_preview(subject="Hi {{ contact.first_name }}", body_text="x").subject == (
        "Hi Ada"
    )


# --- test sends ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_test_send_is_recorded_charged_to_the_service_and_never_counted(
    user, pool, make_contacts, make_service, smtp_sink, staff_user
):
    make_contacts(user, 2)
    service = make_service(port=smtp_sink.port, sending_rate=0.5, daily_quota=10)
    task = queue_task(user)
    before = task_progress(task)
    record = compose.task_send_test(
        task=task, to_email="QA@Example.com", service=service, sent_by=staff_user
    )
    assert record.ok and record.to_email == "qa@example.com" and record.error == ""
    (message,) = smtp_sink.handler.messages
    assert message.rcpt_tos == ["qa@example.com"]
    assert message.headers["Subject"] == "[Test] Hello Ada"
    assert task_progress(task) == before and SubTask.objects.filter(task=task).count() == 2
    service.refresh_from_db()
    assert service.used_quota == 1 and service.total_sent == 0
    assert service.ready_in > 0.3  # its rate is kept: the next send waits


@pytest.mark.django_db(transaction=True)
def test_a_refused_test_send_is_recorded_with_the_servers_answer(
    user, pool, make_contacts, make_service, smtp_sink
):
    make_contacts(user, 1)
    smtp_sink.handler.reject["nobody@example.com"] = "550 5.1.1 no such user"
    task = queue_task(user)
    record = compose.task_send_test(
        task=task, to_email="nobody@example.com", service=make_service(port=smtp_sink.port)
    )
    assert not record.ok and "550 5.1.1 no such user" in record.error
    assert TestSend.objects.get(pk=record.pk).error == record.error


def test_a_test_send_refuses_a_bad_address_another_pools_service_or_a_disabled_one(
    draft, make_service
):
    other = Pool.objects.create(name="other")
    outside = make_service(port=1, target_pool=other)
    inside = make_service(port=1, is_enabled=False)
    with pytest.raises(ApplicationError, match="not an e-mail address"):
        compose.task_send_test(task=draft, to_email="nope", service=inside)
    with pytest.raises(ApplicationError, match="not a service of the task's pool"):
        compose.task_send_test(task=draft, to_email="a@example.com", service=outside)
    with pytest.raises(ApplicationError, match="is disabled"):
        compose.task_send_test(task=draft, to_email="a@example.com", service=inside)
    assert not TestSend.objects.exists()


def test_a_busy_service_is_waited_for_then_refused(draft, make_service):
    from django.db.models.functions import Now

    from apps.services.services import service_reserve_one

    service = make_service(port=1, sending_rate=30)
    service_reserve_one(service_id=service.pk)
    with pytest.raises(ApplicationError, match="is busy"):
        service_reserve_one(service_id=service.pk, wait=0.1)
    EmailService.objects.filter(pk=service.pk).update(next_available_at=Now(), daily_quota=1)
    with pytest.raises(ApplicationError, match="daily quota"):
        service_reserve_one(service_id=service.pk)


# --- the admin ------------------------------------------------------------------------------


@pytest.fixture
def tenant(db):
    return tenant_create(username="tenant-a")[0]


def _form(tag, **extra) -> dict:
    return {
        "name": "From the admin",
        "subject": "Hello {{ contact.first_name }}",
        "from_name": "",
        "body_text": "Hi",
        "body_html": "",
        "include_tags": [tag.pk],
        "pool": Pool.objects.get(name=Pool.DEFAULT_NAME).pk,
        "priority": 0,
        "scheduled_at_0": "",
        "scheduled_at_1": "",
        **extra,
    }


def test_a_tenant_adds_a_task_it_owns_without_being_offered_an_owner(client, tenant, pool):
    tag = Tag.objects.create(owner=tenant, name="mine")
    Contact.objects.create(owner=tenant, email="c@example.com")
    client.force_login(tenant)
    page = client.get(reverse("admin:dispatch_task_add")).content.decode()
    assert 'name="owner"' not in page and 'id="task-audience"' in page
    response = client.post(reverse("admin:dispatch_task_add"), _form(tag))
    assert response.status_code == 302, response.context["adminform"].form.errors
    task = Task.objects.get(name="From the admin")
    assert task.owner == tenant and task.status == Task.Status.DRAFT
    assert list(task.include_tags.all()) == [tag]


def test_the_admin_form_names_a_template_error_and_its_line(client, tenant, pool):
    tag = Tag.objects.create(owner=tenant, name="mine")
    client.force_login(tenant)
    response = client.post(
        reverse("admin:dispatch_task_add"),
        _form(tag, body_text="ok\n{{ contact.first_name|nope }}"),
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "line 2" in errors["body_text"][0]
    assert not Task.objects.exists()


def test_the_admin_refuses_content_changes_once_a_task_sends(client, staff_user, draft):
    client.force_login(staff_user)
    services.task_queue(task=draft)
    url = reverse("admin:dispatch_task_change", args=[draft.pk])
    page = client.get(url).content.decode()
    assert 'name="subject"' not in page and 'name="name"' in page
    client.post(url, {"name": "Renamed", "subject": "Sneaky"})
    draft.refresh_from_db()
    assert (draft.name, draft.subject) == ("Renamed", "Hi {{ contact.first_name }}")


def test_the_change_page_buttons_call_the_services(client, staff_user, draft):
    client.force_login(staff_user)
    page = client.get(reverse("admin:dispatch_task_change", args=[draft.pk])).content.decode()
    assert 'id="task-queue"' in page and 'id="task-pause"' not in page
    do = lambda action: client.post(  # noqa: E731
        reverse("admin:dispatch_task_do", args=[draft.pk, action]), follow=True
    )
    assert "queued to 4 recipient(s)" in do("queue").content.decode()
    assert "paused" in do("pause").content.decode()
    assert "resumed" in do("resume").content.decode()
    assert "Not paused" not in do("cancel").content.decode()
    draft.refresh_from_db()
    assert draft.status == Task.Status.CANCELLED
    refused = do("pause").content.decode()
    assert "Not paused: a cancelled task cannot be paused" in refused
    copied = do("duplicate")
    assert copied.redirect_chain[-1][0].endswith(
        f"/{Task.objects.get(name='Draft (copy)').pk}/change/"
    )


def test_the_audience_preview_and_progress_endpoints_answer_json(client, staff_user, draft, user):
    client.force_login(staff_user)
    contact = Contact.objects.filter(owner=user).order_by("pk").first()
    audience = client.get(reverse("admin:dispatch_task_audience", args=[draft.pk])).json()
    assert audience["recipients"] == 4
    preview = client.post(
        reverse("admin:dispatch_task_preview", args=[draft.pk]),
        {"subject": "Dear {{ contact.first_name }}", "contact": contact.pk},
    ).json()
    assert preview["subject"] == f"Dear {contact.first_name}" and preview["to"] == contact.email
    broken = client.post(
        reverse("admin:dispatch_task_preview", args=[draft.pk]), {"subject": "{% if %}"}
    )
    assert broken.status_code == 400 and "subject" in broken.json()["errors"]
    services.task_queue(task=draft)
    progress = client.get(reverse("admin:dispatch_task_progress", args=[draft.pk])).json()
    assert (progress["status"], progress["progress"]["pending"], progress["percent"]) == (
        "queued",
        4,
        0.0,
    )
    assert progress["queued_at"].endswith("+00:00")


def test_a_draft_may_be_deleted_in_the_admin(client, staff_user, draft):
    client.force_login(staff_user)
    response = client.post(reverse("admin:dispatch_task_delete", args=[draft.pk]), {"post": "yes"})
    assert response.status_code == 302 and not Task.objects.filter(pk=draft.pk).exists()
    deleted = Event.objects.get(type="task.deleted")
    assert (deleted.subject_id, deleted.actor_id, deleted.payload["name"]) == (
        str(draft.pk),
        staff_user.pk,
        draft.name,
    )

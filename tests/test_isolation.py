"""Tenant isolation: a second tenant walks every admin URL and every API endpoint and
finds nothing of the first tenant's — not listed, not shown, not changed.

The walks are driven by what the project declares (the admin's registry and URL
patterns, the OpenAPI schema's paths), so a new page or endpoint is walked too; one
that this test does not know how to call fails it until it is taught.
"""

from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from apps.contacts.models import Contact, ContactImport, Tag
from apps.contacts.services import contact_import_create, contact_import_run, contacts_bulk_upsert
from apps.core.services import tenant_create
from apps.deliverability.models import Suppression
from apps.dispatch import services as dispatch
from apps.dispatch.models import DeadLetter, SubTask, Task, TestSend
from apps.events.models import WebhookDelivery
from apps.events.webhooks import webhook_create
from apps.services.models import EmailService
from apps.services.selectors import pool_default

pytestmark = pytest.mark.django_db

SECRET = "zq7secret"  # in every name and address of the first tenant's data


@pytest.fixture
def first(db):
    """The first tenant and one of each of its objects, every name carrying SECRET."""
    alice, _ = tenant_create(username=f"alice-{SECRET}", password="alice-long-password")
    pool = pool_default()
    service = EmailService.objects.create(
        pool=pool, name="svc", kind="console", from_email="news@example.com"
    )
    contacts_bulk_upsert(
        owner=alice,
        rows=[{"email": f"{SECRET}{i}@alice.test", "first_name": f"A{SECRET}"} for i in range(3)],
        tag_names=[f"tag-{SECRET}"],
    )
    tag = Tag.objects.get(owner=alice)
    task = dispatch.task_create(
        owner=alice,
        name=f"task-{SECRET}",
        subject=f"subject {SECRET}",
        body_text="b",
        include_tags=[tag.pk],
    )
    dispatch.task_queue(task=task)
    draft = dispatch.task_create(
        owner=alice, name=f"draft-{SECRET}", subject="s", body_text="b", include_tags=[tag.pk]
    )
    subtask = SubTask.objects.filter(task=task).first()
    SubTask.objects.filter(pk=subtask.pk).update(status="dead")
    dead = DeadLetter.objects.create(
        subtask=subtask, task=task, owner=alice, error_type="smtp_550", error_message=SECRET
    )
    job = contact_import_create(
        owner=alice,
        uploaded_file=SimpleUploadedFile(f"{SECRET}.csv", f"email\nimp-{SECRET}@a.test\n".encode()),
    )
    contact_import_run(import_id=job.pk)
    test = TestSend.objects.create(
        task=task, owner=alice, service=service, to_email=f"t-{SECRET}@alice.test", ok=True
    )
    suppression = Suppression.objects.create(
        owner=alice, email=f"supp-{SECRET}@alice.test", reason="manual", note=SECRET
    )
    endpoint = webhook_create(
        owner=alice, actor=alice, url=f"https://hooks.example.com/{SECRET}", event_types=["*"]
    )[0]
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint,
        event_id=1,
        event_uid="5c0e1f7a-8d0e-4b8e-9a53-3f1d7d3f8a10",
        event_type="task.completed",
        occurred_at="2026-12-01T12:00:00Z",
        body=f'{{"data": "{SECRET}"}}',
    )
    return {
        "user": alice,
        "webhookendpoint": endpoint,
        "webhookdelivery": delivery,
        "contact": Contact.objects.filter(owner=alice).first(),
        "tag": tag,
        "task": task,
        "draft": draft,
        "subtask": subtask,
        "deadletter": dead,
        "contactimport": ContactImport.objects.get(pk=job.pk),
        "testsend": test,
        "suppression": suppression,
        "service": service,
        "pool": pool,
    }


@pytest.fixture
def second(db):
    """The second tenant, with data of its own (so its lists are not empty)."""
    bob, _ = tenant_create(username="bob", password="bob-long-password")
    contacts_bulk_upsert(owner=bob, rows=[{"email": "bob@bob.test"}], tag_names=["bob-tag"])
    dispatch.task_create(
        owner=bob,
        name="bob's task",
        subject="s",
        body_text="b",
        include_tags=list(bob.tags.values_list("pk", flat=True)),
    )
    return bob


def snapshot(first) -> tuple:
    """Everything of the first tenant that a change could touch."""
    alice = first["user"]
    return (
        list(Contact.objects.filter(owner=alice).order_by("pk").values()),
        list(Tag.objects.filter(owner=alice).order_by("pk").values()),
        list(Task.objects.filter(owner=alice).order_by("pk").values()),
        sorted(SubTask.objects.filter(owner=alice).values_list("pk", "status")),
        list(DeadLetter.objects.filter(owner=alice).values_list("pk", "status", "reprocess_count")),
        list(ContactImport.objects.filter(owner=alice).values_list("pk", "status")),
        list(TestSend.objects.filter(owner=alice).values_list("pk")),
        list(Suppression.objects.filter(owner=alice).values()),
        list(alice.groups.values_list("name", flat=True)),
    )


def no_secret(response, where: str) -> None:
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert SECRET.encode() not in body, f"{where} shows the first tenant's data"


# --- the admin ----------------------------------------------------------------------------


def test_every_admin_url_hides_the_first_tenants_data_from_a_second_tenant(client, first, second):
    before = snapshot(first)
    client.force_login(second)
    walked = 0
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        info = f"{opts.app_label}_{opts.model_name}"
        changelist = client.get(reverse(f"admin:{info}_changelist"))
        assert changelist.status_code in (200, 403), (info, changelist.status_code)
        no_secret(changelist, f"the {opts.model_name} list")
        add = client.get(reverse(f"admin:{info}_add"))
        assert add.status_code in (200, 302, 403), info
        no_secret(add, f"the {opts.model_name} add page")
        obj = first.get(opts.model_name)
        if obj is None:
            continue
        for view in ("change", "delete", "history"):
            url = reverse(f"admin:{info}_{view}", args=[obj.pk])
            response = client.get(url)
            assert response.status_code in (403, 404), (url, response.status_code)
            no_secret(response, url)
            posted = client.post(url, {"name": "stolen", "post": "yes"})
            assert posted.status_code in (403, 404), (url, posted.status_code)
            walked += 1
        # A list filtered on the first tenant's object, and its actions.
        for param in ("task", "tag", "owner__id__exact", "task__id__exact"):
            no_secret(client.get(changelist.wsgi_request.path, {param: first["task"].pk}), param)
        for action in model_admin.get_actions(changelist.wsgi_request) or {}:
            client.post(
                reverse(f"admin:{info}_changelist"),
                {"action": action, "_selected_action": [obj.pk], "apply": "1", "tag": obj.pk},
            )
    assert walked >= 3 * 7
    assert snapshot(first) == before


def test_the_admins_own_pages_of_a_task_or_an_import_answer_404(client, first, second):
    client.force_login(second)
    task, job = first["task"], first["contactimport"]
    for name in ("progress", "preview", "audience"):
        response = client.get(reverse(f"admin:dispatch_task_{name}", args=[task.pk]))
        assert response.status_code == 404, name
    for name in ("send_test",):
        response = client.post(reverse(f"admin:dispatch_task_{name}", args=[task.pk]))
        assert response.status_code == 404, name
    for action in ("queue", "pause", "cancel", "duplicate"):
        url = reverse("admin:dispatch_task_do", args=[task.pk, action])
        assert client.post(url).status_code == 404, action
    for name in ("progress", "report"):
        url = reverse(f"admin:contacts_contactimport_{name}", args=[job.pk])
        assert client.get(url).status_code == 404, name
    assert Task.objects.get(pk=task.pk).status == task.status


def test_the_audience_of_a_new_task_counts_only_the_tenants_own_contacts(client, first, second):
    client.force_login(second)
    tag = first["tag"]
    response = client.get(reverse("admin:dispatch_task_audience"), {"include_tags": tag.pk})
    assert response.json()["total"] == 0


def test_autocomplete_answers_only_the_tenants_own_objects(client, first, second):
    client.force_login(second)
    for model, field in (("task", "include_tags"), ("task", "exclude_tags"), ("task", "contacts")):
        for term in ("", SECRET, "tag", "a"):
            response = client.get(
                "/admin/autocomplete/",
                {"app_label": "dispatch", "model_name": model, "field_name": field, "term": term},
            )
            assert response.status_code == 200, (field, response.content)
            no_secret(response, f"the {field} autocomplete")
    response = client.get(
        "/admin/autocomplete/",
        {"app_label": "contacts", "model_name": "tag", "field_name": "parent", "term": ""},
    )
    assert response.status_code == 200
    no_secret(response, "the parent tag autocomplete")


def test_a_tenants_form_refuses_the_first_tenants_objects_as_choices(client, first, second):
    client.force_login(second)
    response = client.post(
        reverse("admin:dispatch_task_add"),
        {
            "name": "n",
            "subject": "s",
            "body_text": "b",
            "include_tags": [first["tag"].pk],
            "contacts": [first["contact"].pk],
            "pool": first["pool"].pk,
            "priority": 0,
        },
    )
    assert response.status_code == 200  # the form again, with errors
    errors = response.context["adminform"].form.errors
    assert "include_tags" in errors and "contacts" in errors
    assert not Task.objects.filter(owner=second, name="n").exists()


def test_a_tenant_has_none_of_the_operators_pages(client, second):
    client.force_login(second)
    index = client.get(reverse("admin:index")).content.decode()
    for name in ("Email services", "Pools", "System configuration", "Users", "Queued tasks"):
        assert name not in index, name
    for url in (
        "admin:services_emailservice_changelist",
        "admin:services_pool_changelist",
        "admin:config_systemconfig_changelist",
        "admin:auth_user_changelist",
        "admin:auth_group_changelist",
        "admin:django_q_ormq_changelist",
        "admin:django_q_schedule_changelist",
    ):
        assert client.get(reverse(url)).status_code == 403, url


# --- the API ------------------------------------------------------------------------------

# How to call each documented operation on the first tenant's data: {id} is replaced by
# the id of the object the path's family names; the body is sent as JSON.
FAMILIES = {
    "contacts": "contact",
    "tags": "tag",
    "tasks": "task",
    "imports": "contactimport",
    "dlq": "deadletter",
    "services": "service",
    "pools": "pool",
    "suppressions": "suppression",
    "webhooks": "webhookendpoint",
    "reports": "task",
}
# Families of operators' objects (alert rules, channels, alerts): any id; a tenant is
# refused, whatever the id names.
OPERATOR_FAMILIES = {"monitoring"}
BODIES = {
    ("post", "/api/tags/{id}/merge/"): lambda f, b: {"into": b.tags.first().pk},
    ("post", "/api/tasks/{id}/requeue-unknown"): lambda f, b: {"subtask_ids": [f["subtask"].pk]},
    # Creating is the caller's own business (another owner's address or tag name makes
    # a row of the caller's); what is checked is that nothing of the first tenant moves.
    ("post", "/api/contacts/bulk/"): lambda f, b: {
        "contacts": [{"email": "new@bob.test"}],
        "tags": ["bob-tag"],
    },
    ("post", "/api/contacts/"): lambda f, b: {"email": "new2@bob.test", "tags": [f["tag"].pk]},
    ("post", "/api/tags/"): lambda f, b: {"name": "bob-new", "parent": f["tag"].pk},
    ("post", "/api/tasks/"): lambda f, b: {
        "name": "n",
        "subject": "s",
        "body_text": "b",
        "include_tags": [f["tag"].pk],
    },
    ("patch", "/api/contacts/{id}/"): lambda f, b: {"first_name": "stolen"},
    ("put", "/api/contacts/{id}/"): lambda f, b: {"email": "x@x.test", "first_name": "stolen"},
    ("patch", "/api/tags/{id}/"): lambda f, b: {"name": "stolen"},
    ("put", "/api/tags/{id}/"): lambda f, b: {"name": "stolen"},
}
# Operations whose outcome for a second tenant is not a 404 by design, and why.
NOT_SCOPED = {
    "/api/auth/token/": "a login",
    "/api/health": "no data",
    "/api/schema/": "the schema",
    "/api/docs/": "the docs",
}


def _query_for(path: str, first) -> dict:
    if path == "/api/dlq/reprocess-all":
        return {"task": first["task"].pk}
    if path in ("/api/dlq", "/api/dlq/stats"):
        return (
            {"owner": first["user"].pk, "task": first["task"].pk}
            if path == "/api/dlq"
            else {"owner": first["user"].pk}
        )
    return {}


def test_every_api_endpoint_hides_the_first_tenants_data_from_a_second_tenant(first, second):
    api = APIClient()
    api.force_authenticate(second)
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    before = snapshot(first)
    walked = []
    for path, operations in schema["paths"].items():
        if path in NOT_SCOPED:
            continue
        family = path.split("/")[2]
        for method in operations:
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            url = path
            if "{" in path:
                assert family in FAMILIES or family in OPERATOR_FAMILIES | {"system-config"}, (
                    f"{method.upper()} {path}: teach this test which object it names"
                )
                if family == "system-config":
                    url = re.sub(r"\{[^}]+\}", "queue.batch_size", path)
                elif family in OPERATOR_FAMILIES:
                    url = re.sub(r"\{[^}]+\}", "1", path)
                else:
                    url = re.sub(r"\{[^}]+\}", str(first[FAMILIES[family]].pk), path)
            body = BODIES.get((method, path), lambda f, b: {})(first, second)
            query = _query_for(path, first)
            if method == "get":
                response = api.get(url, query)
            else:
                target = url + (
                    "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""
                )
                response = getattr(api, method)(target, body, format="json")
            walked.append((method, path, response.status_code))
            # Health answers 503 where no cluster runs (as here): a state, not an error.
            healthy = path == "/api/monitoring/system-health" and response.status_code == 503
            assert response.status_code < 500 or healthy, (method, path, response.content[:300])
            no_secret(response, f"{method.upper()} {path}")
            if "{" in path and (family in FAMILIES or family in OPERATOR_FAMILIES):
                assert response.status_code in (400, 403, 404), (method, path, response.status_code)
    assert len(walked) >= 40, walked
    assert snapshot(first) == before

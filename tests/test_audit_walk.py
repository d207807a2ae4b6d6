"""Who did what: every state-changing API call and admin operation leaves an event
naming its actor (the user who made the request).

The walks are driven by what the project declares — the OpenAPI schema's operations
with a non-safe method, the admin's registered ModelAdmins with their add, change and
delete permissions and their actions — so a new endpoint, model admin or action is
walked too; one that this test does not know how to set up fails it until it is taught.
"""

from __future__ import annotations

import itertools
import re
from html.parser import HTMLParser

import pytest
from django.contrib import admin
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from apps.config import services as config
from apps.config.models import SystemConfig
from apps.contacts.models import Contact, Tag
from apps.contacts.services import (
    ContactSelection,
    contact_import_run,
    contacts_bulk_upsert,
    tag_add_contacts,
    tag_create,
)
from apps.deliverability.services import suppression_add
from apps.dispatch import services as dispatch
from apps.dispatch.models import DeadLetter, SubTask, Task
from apps.events.models import Event, Projection, WebhookDelivery, WebhookEndpoint
from apps.events.webhooks import webhook_create
from apps.monitoring import services as monitoring
from apps.monitoring.models import Alert
from apps.services import services as email_services
from apps.services.models import EmailService, Pool
from apps.services.selectors import pool_default

pytestmark = pytest.mark.django_db

_numbers = itertools.count(1)


def _n() -> int:
    return next(_numbers)


class World:
    """Fresh objects for each call (a call may delete or consume what it is given),
    owned by ``user`` (an operator, who may call every operation)."""

    def __init__(self, user):
        self.user = user
        self.tag = tag_create(owner=user, name="walk")

    def contact(self) -> Contact:
        rows = contacts_bulk_upsert(owner=self.user, rows=[{"email": f"c{_n()}@walk.test"}])
        contact = Contact.objects.get(pk=rows[0]["id"])
        tag_add_contacts(tag=self.tag, selection=ContactSelection(ids=[contact.pk]))
        return contact

    def member_tag(self) -> tuple[Tag, Contact]:
        tag = tag_create(owner=self.user, name=f"t{_n()}")
        contact = self.contact()
        tag_add_contacts(tag=tag, selection=ContactSelection(ids=[contact.pk]))
        return tag, contact

    def new_tag(self) -> Tag:
        return self.member_tag()[0]

    def draft(self) -> Task:
        self.contact()
        return dispatch.task_create(
            owner=self.user,
            name=f"task {_n()}",
            subject="s",
            body_text="b",
            include_tags=[self.tag.pk],
        )

    def queued(self) -> Task:
        return dispatch.task_queue(task=self.draft())

    def paused(self) -> Task:
        return dispatch.task_pause(task=self.queued())

    def unknown(self) -> tuple[Task, SubTask]:
        task = self.queued()
        subtask = SubTask.objects.filter(task=task).first()
        SubTask.objects.filter(pk=subtask.pk).update(status=SubTask.Status.UNKNOWN)
        return task, subtask

    def dead_letter(self) -> DeadLetter:
        task = self.queued()
        subtask = SubTask.objects.filter(task=task).first()
        SubTask.objects.filter(pk=subtask.pk).update(status=SubTask.Status.DEAD)
        return DeadLetter.objects.create(
            subtask=subtask, task=task, owner=self.user, error_type="smtp_550", error_message="x"
        )

    def pool(self) -> Pool:
        return email_services.pool_create(name=f"pool {_n()}")

    def service(self, *, enabled: bool = True) -> EmailService:
        return email_services.service_create(
            name=f"svc {_n()}",
            kind="console",
            from_email="news@example.com",
            is_enabled=enabled,
        )

    def rule(self):
        return monitoring.rule_create(
            name=f"rule {_n()}",
            metric="dlq_pending",
            comparison="gt",
            threshold=1000,
            level="warning",
        )

    def channel(self):
        return monitoring.channel_create(name=f"ch {_n()}", kind="email", target="ops@example.com")[
            0
        ]

    def alert(self) -> Alert:
        rule = self.rule()
        return Alert.objects.create(
            rule=rule,
            rule_name=rule.name,
            metric=rule.metric,
            subject=f"walk:{_n()}",
            level=rule.level,
            value=2000,
            threshold=rule.threshold,
            fired_at="2026-01-01T00:00Z",
        )

    def suppression(self):
        return suppression_add(owner=self.user, email=f"s{_n()}@walk.test", actor=self.user)[0]

    def member_call(self) -> tuple:
        tag, contact = self.member_tag()
        return tag.pk, {"contact_ids": [contact.pk]}, "json"

    def unknown_call(self) -> tuple:
        task, subtask = self.unknown()
        return task.pk, {"subtask_ids": [subtask.pk]}, "json"

    def reprocess_all_call(self) -> tuple:
        self.dead_letter()
        return None, None, "json"

    def endpoint(self, *, enabled: bool = True) -> WebhookEndpoint:
        endpoint = webhook_create(
            owner=self.user,
            actor=self.user,
            url="https://hooks.example.com/walk",
            event_types=["*"],
        )[0]
        if not enabled:
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(is_enabled=False)
        return endpoint

    def delivery(self) -> WebhookDelivery:
        return WebhookDelivery.objects.create(
            endpoint=self.endpoint(),
            event_id=0,
            event_uid="5c0e1f7a-8d0e-4b8e-9a53-3f1d7d3f8a10",
            event_type="task.completed",
            occurred_at="2026-12-01T12:00:00Z",
            body="{}",
            status="dead",
        )

    def projection(self, status: str = "running") -> Projection:
        projection, _ = Projection.objects.get_or_create(name="owner_daily")
        Projection.objects.filter(pk=projection.pk).update(status=status)
        return projection

    def config_history_id(self) -> int:
        config.config_set(key="queue.batch_size", value=100 + _n(), reason="walk")
        config.config_set(key="queue.batch_size", value=100 + _n(), reason="walk")
        return SystemConfig.history.filter(key="queue.batch_size").order_by("history_id")[0].pk


def _service_body() -> dict:
    return {
        "name": f"svc {_n()}",
        "kind": "console",
        "host": "",
        "port": 25,
        "security": "none",
        "username": "",
        "password": "",
        "from_email": "news@example.com",
        "daily_quota": 0,
        "sending_rate": 0,
        "is_enabled": True,
        "pool": pool_default().pk,
    }


def _csv(name: str, text: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode(), content_type="text/csv")


# How to call each state-changing operation: (method, path) → a function of the world
# returning (the path's id or None, the body, the body's format).
CALLS = {
    ("post", "/api/contacts/"): lambda w: (None, {"email": f"n{_n()}@walk.test"}, "json"),
    ("put", "/api/contacts/{id}/"): lambda w: (
        w.contact().pk,
        {"email": f"p{_n()}@walk.test", "first_name": "Put"},
        "json",
    ),
    ("patch", "/api/contacts/{id}/"): lambda w: (w.contact().pk, {"first_name": "P"}, "json"),
    ("delete", "/api/contacts/{id}/"): lambda w: (w.contact().pk, None, "json"),
    ("post", "/api/contacts/bulk/"): lambda w: (
        None,
        {"contacts": [{"email": f"b{_n()}@walk.test"}], "tags": ["walk"]},
        "json",
    ),
    ("post", "/api/contacts/import/"): lambda w: (
        None,
        {"file": _csv("walk.csv", f"email\ni{_n()}@walk.test\n")},
        "multipart",
    ),
    ("post", "/api/dlq/{id}/reprocess"): lambda w: (w.dead_letter().pk, None, "json"),
    ("post", "/api/dlq/reprocess-all"): lambda w: w.reprocess_all_call(),
    ("post", "/api/monitoring/alert-rules/"): lambda w: (
        None,
        {
            "name": f"r{_n()}",
            "metric": "dlq_pending",
            "comparison": "gt",
            "threshold": 5,
            "for_seconds": 0,
            "level": "warning",
            "channels": [],
            "enabled": True,
        },
        "json",
    ),
    ("put", "/api/monitoring/alert-rules/{id}/"): lambda w: (
        w.rule().pk,
        {
            "name": f"r{_n()}",
            "metric": "dlq_pending",
            "comparison": "gt",
            "threshold": 7,
            "for_seconds": 0,
            "level": "warning",
            "channels": [],
            "enabled": True,
        },
        "json",
    ),
    ("patch", "/api/monitoring/alert-rules/{id}/"): lambda w: (
        w.rule().pk,
        {"threshold": 9},
        "json",
    ),
    ("delete", "/api/monitoring/alert-rules/{id}/"): lambda w: (w.rule().pk, None, "json"),
    ("post", "/api/monitoring/alerts/{id}/acknowledge"): lambda w: (w.alert().pk, None, "json"),
    ("post", "/api/monitoring/alerts/{id}/resolve"): lambda w: (w.alert().pk, None, "json"),
    ("post", "/api/monitoring/channels/"): lambda w: (
        None,
        {"name": f"ch{_n()}", "kind": "email", "target": "ops@example.com"},
        "json",
    ),
    ("patch", "/api/monitoring/channels/{id}/"): lambda w: (
        w.channel().pk,
        {"name": f"ch{_n()}"},
        "json",
    ),
    ("delete", "/api/monitoring/channels/{id}/"): lambda w: (w.channel().pk, None, "json"),
    ("post", "/api/pools/"): lambda w: (None, {"name": f"pool {_n()}"}, "json"),
    ("put", "/api/pools/{id}/"): lambda w: (
        w.pool().pk,
        {"name": f"pool {_n()}", "description": "d", "is_shared": True},
        "json",
    ),
    ("patch", "/api/pools/{id}/"): lambda w: (w.pool().pk, {"description": "p"}, "json"),
    ("delete", "/api/pools/{id}/"): lambda w: (w.pool().pk, None, "json"),
    ("post", "/api/services/"): lambda w: (None, _service_body(), "json"),
    ("put", "/api/services/{id}/"): lambda w: (w.service().pk, _service_body(), "json"),
    ("patch", "/api/services/{id}/"): lambda w: (w.service().pk, {"daily_quota": 5}, "json"),
    ("delete", "/api/services/{id}/"): lambda w: (w.service().pk, None, "json"),
    ("post", "/api/services/{id}/disable/"): lambda w: (w.service().pk, {"reason": "walk"}, "json"),
    ("post", "/api/services/{id}/enable/"): lambda w: (
        w.service(enabled=False).pk,
        {"reason": "walk"},
        "json",
    ),
    ("post", "/api/suppressions/"): lambda w: (None, {"email": f"s{_n()}@walk.test"}, "json"),
    ("post", "/api/suppressions/{id}/lift"): lambda w: (
        w.suppression().pk,
        {"reason": "walk"},
        "json",
    ),
    ("post", "/api/suppressions/import"): lambda w: (
        None,
        {"file": _csv("s.csv", f"email\nimp{_n()}@walk.test\n")},
        "multipart",
    ),
    ("put", "/api/system-config/{name}/"): lambda w: (
        "queue.batch_size",
        {"value": 200 + _n(), "reason": "walk"},
        "json",
    ),
    ("post", "/api/system-config/{name}/rollback/"): lambda w: (
        "queue.batch_size",
        {"history_id": w.config_history_id(), "reason": "walk"},
        "json",
    ),
    ("put", "/api/system-config/batch/"): lambda w: (
        None,
        {"queue.batch_size": 300 + _n()},
        "json",
    ),
    ("post", "/api/tags/"): lambda w: (None, {"name": f"tag {_n()}"}, "json"),
    ("patch", "/api/tags/{id}/"): lambda w: (w.new_tag().pk, {"name": f"tag {_n()}"}, "json"),
    ("delete", "/api/tags/{id}/"): lambda w: (w.new_tag().pk, None, "json"),
    ("post", "/api/tags/{id}/contacts/"): lambda w: (
        w.new_tag().pk,
        {"contact_ids": [w.contact().pk]},
        "json",
    ),
    ("delete", "/api/tags/{id}/contacts/"): lambda w: w.member_call(),
    ("post", "/api/tags/{id}/merge/"): lambda w: (w.new_tag().pk, {"into": w.tag.pk}, "json"),
    ("post", "/api/tasks/"): lambda w: (
        None,
        {"name": "n", "subject": "s", "body_text": "b", "include_tags": [w.tag.pk]},
        "json",
    ),
    ("post", "/api/tasks/{id}/queue"): lambda w: (w.draft().pk, None, "json"),
    ("post", "/api/tasks/{id}/pause"): lambda w: (w.queued().pk, None, "json"),
    ("post", "/api/tasks/{id}/resume"): lambda w: (w.paused().pk, None, "json"),
    ("post", "/api/tasks/{id}/cancel"): lambda w: (w.queued().pk, None, "json"),
    ("post", "/api/tasks/{id}/requeue-unknown"): lambda w: w.unknown_call(),
    ("post", "/api/webhooks/"): lambda w: (
        None,
        {"url": "https://hooks.example.com/walk", "event_types": ["task.*"]},
        "json",
    ),
    ("patch", "/api/webhooks/{id}/"): lambda w: (w.endpoint().pk, {"description": "p"}, "json"),
    ("delete", "/api/webhooks/{id}/"): lambda w: (w.endpoint().pk, None, "json"),
    ("post", "/api/webhooks/{id}/rotate-secret"): lambda w: (w.endpoint().pk, {}, "json"),
    ("post", "/api/webhooks/deliveries/{id}/replay"): lambda w: (w.delivery().pk, None, "json"),
    ("post", "/api/reports/projections/{name}/pause"): lambda w: (
        w.projection().pk,
        None,
        "json",
    ),
    ("post", "/api/reports/projections/{name}/resume"): lambda w: (
        w.projection("paused").pk,
        None,
        "json",
    ),
    ("post", "/api/reports/projections/{name}/rebuild"): lambda w: (
        w.projection().pk,
        None,
        "json",
    ),
}
# Non-safe operations that change no state of EDM's, and why.
NO_CHANGE = {
    ("post", "/api/auth/token/"): "a login",
    ("post", "/api/services/{id}/test/"): "connects and logs in, sends and stores nothing",
    ("post", "/api/monitoring/channels/{id}/test"): "a test notification, changes no setting",
}


def _new_events(mark: int, user) -> list[Event]:
    return list(Event.objects.filter(pk__gt=mark, actor_id=user.pk))


def _mark() -> int:
    return Event.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def _run_queued_imports() -> None:
    """The import's q2 job (queued on commit, which a test transaction never reaches)."""
    from apps.contacts.models import ContactImport

    for pk in ContactImport.objects.filter(status="pending").values_list("pk", flat=True):
        contact_import_run(import_id=pk)


def test_every_state_changing_api_call_records_its_actor(staff_user):
    api = APIClient()
    api.force_authenticate(staff_user)
    world = World(staff_user)
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    walked = []
    for path, operations in schema["paths"].items():
        for method in operations:
            if method not in ("post", "put", "patch", "delete") or (method, path) in NO_CHANGE:
                continue
            assert (method, path) in CALLS, f"{method.upper()} {path}: teach this test its call"
            ref, body, fmt = CALLS[(method, path)](world)
            url = re.sub(r"\{[^}]+\}", str(ref), path)
            mark = _mark()
            response = getattr(api, method)(url, body, format=fmt)
            assert response.status_code < 300, (method, path, response.content[:300])
            _run_queued_imports()
            events = _new_events(mark, staff_user)
            assert events, f"{method.upper()} {path} left no event naming its actor"
            walked.append((method, path, sorted({e.type for e in events})))
    assert len(walked) >= len(CALLS), walked


# --- the admin ------------------------------------------------------------------------------


class _FormReader(HTMLParser):
    """The fields a browser would submit from the page's main form, unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, list[str]] = {}
        self._select: str | None = None
        self._select_multiple = False
        self._first_option: str | None = None
        self._selected = False
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        name = attrs.get("name")
        if tag == "input" and name:
            kind = attrs.get("type", "text")
            if kind in ("submit", "button", "file", "image", "reset"):
                return
            if kind in ("checkbox", "radio") and "checked" not in attrs:
                return
            default = "on" if kind in ("checkbox", "radio") else ""
            self.data.setdefault(name, []).append(attrs.get("value", default))
        elif tag == "select" and name:
            self._select, self._select_multiple = name, "multiple" in attrs
            self._first_option, self._selected = None, False
        elif tag == "option" and self._select:
            value = attrs.get("value", "")
            if self._first_option is None:
                self._first_option = value
            if "selected" in attrs:
                self.data.setdefault(self._select, []).append(value)
                self._selected = True
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = [""]

    def handle_data(self, data) -> None:
        if self._textarea:
            self.data[self._textarea][0] += data

    def handle_endtag(self, tag) -> None:
        if tag == "select" and self._select:
            if not self._selected and not self._select_multiple and self._first_option:
                self.data[self._select] = [self._first_option]
            self._select = None
        elif tag == "textarea":
            if self._textarea:
                self.data[self._textarea][0] = self.data[self._textarea][0].lstrip("\n")
            self._textarea = None


def _form_data(response) -> dict:
    reader = _FormReader()
    reader.feed(response.content.decode())
    data = {k: v if len(v) > 1 else v[0] for k, v in reader.data.items()}
    data.pop("csrfmiddlewaretoken", None)
    for name in ("_addanother", "_continue", "_saveasnew", "action", "select_across", "index"):
        data.pop(name, None)
    return data


# Models whose admin changes no event records, and why.
NOT_EVENTS = {
    "auth.user": "accounts: Django's admin log records who changed them",
    "auth.group": "permission groups: Django's admin log records who changed them",
    "authtoken.tokenproxy": "API tokens: Django's admin log records who made them",
    "axes.accessattempt": "django-axes' records of failed logins",
    "axes.accesslog": "django-axes' records of logins",
    "axes.accessfailurelog": "django-axes' records of failed logins",
    "django_q.schedule": "the q2 cluster's own schedules (made by a management command)",
    "django_q.success": "the q2 cluster's task results",
    "django_q.failure": "the q2 cluster's task results",
    "django_q.ormq": "the q2 cluster's queue",
    "contacts.contactimport": "import jobs: what an import did is its import.completed event;"
    " deleting the job's record changes no contact (no event type for it yet)",
    "deliverability.dkimkey": "signing keys: a deployment setting, recorded in the admin log",
    "deliverability.inboundmessage": "review marks on inbound mail, no state of a contact",
}


class AdminWorld(World):
    """The objects each model admin's pages and actions act on, and the values an add
    form needs beyond its defaults (and what a change changes)."""

    def __init__(self, user):
        super().__init__(user)
        self.make = {
            "contacts.contact": self.contact,
            "contacts.tag": self.new_tag,
            "dispatch.task": self.draft,
            "dispatch.subtask": lambda: self.unknown()[1],
            "dispatch.deadletter": self.dead_letter,
            "services.emailservice": self.service,
            "services.pool": self.pool,
            "monitoring.alertrule": self.rule,
            "monitoring.notificationchannel": self.channel,
            "monitoring.alert": self.alert,
            "config.systemconfig": lambda: SystemConfig.objects.get(key="queue.batch_size"),
            "deliverability.suppression": self.suppression,
            "events.webhookendpoint": self.endpoint,
            "events.webhookdelivery": self.delivery,
            "events.projection": self.projection,
        }
        self.add = {
            "contacts.contact": lambda: {"email": f"a{_n()}@walk.test", "owner": self.user.pk},
            "contacts.tag": lambda: {"name": f"a{_n()}", "owner": self.user.pk},
            "dispatch.task": lambda: {
                "name": "added",
                "subject": "s",
                "body_text": "b",
                "include_tags": self.tag.pk,
            },
            "services.emailservice": lambda: {
                "name": f"a{_n()}",
                "kind": "console",
                "from_email": "a@example.com",
                "daily_quota": 0,
                "sending_rate": 0,
                "port": 25,
                "pool": pool_default().pk,
            },
            "services.pool": lambda: {"name": f"a{_n()}"},
            "monitoring.alertrule": lambda: {
                "name": f"a{_n()}",
                "metric": "dlq_pending",
                "comparison": "gt",
                "threshold": 5,
                "for_seconds": 0,
                "level": "warning",
            },
            "monitoring.notificationchannel": lambda: {
                "name": f"a{_n()}",
                "kind": "email",
                "target": "ops@example.com",
            },
            "deliverability.suppression": lambda: {
                "email": f"a{_n()}@walk.test",
                "reason": "manual",
            },
            "events.webhookendpoint": lambda: {
                "owner": self.user.pk,
                "url": "https://hooks.example.com/added",
                "event_types": "*",
                "is_enabled": "on",
            },
        }
        self.change = {
            "contacts.contact": {"first_name": "Changed"},
            "contacts.tag": {"name": f"changed {_n()}"},
            "dispatch.task": {"name": "changed"},
            "services.emailservice": {"daily_quota": 7},
            "services.pool": {"description": "changed"},
            "monitoring.alertrule": {"threshold": 11},
            "monitoring.notificationchannel": {"name": f"changed {_n()}"},
            "config.systemconfig": {"value": str(400 + _n()), "reason": "walk"},
            "events.webhookendpoint": {"description": f"changed {_n()}"},
        }
        # What an action's intermediate page asks (the contacts' tag actions).
        self.action_data = {"add_to_tag": lambda: {"apply": "1", "tag": self.new_tag().pk}}

    def action_object(self, label: str, action: str):
        if label == "dispatch.task":
            return {
                "queue_tasks": self.draft,
                "pause_tasks": self.queued,
                "resume_tasks": self.paused,
                "cancel_tasks": self.queued,
                "duplicate_tasks": self.draft,
                "requeue_unknown": lambda: self.unknown()[0],
            }[action]()
        if label == "contacts.contact" and action == "remove_from_tag":
            tag, contact = self.member_tag()
            self.action_data["remove_from_tag"] = lambda: {"apply": "1", "tag": tag.pk}
            return contact
        if label == "services.emailservice" and action == "enable_services":
            return self.service(enabled=False)
        if label == "events.webhookendpoint" and action == "enable":
            return self.endpoint(enabled=False)
        if label == "events.projection" and action == "resume":
            return self.projection("paused")
        return self.make[label]()


# Actions that change nothing, and why.
NO_CHANGE_ACTIONS = {
    ("services.emailservice", "test_connection"): "connects and logs in, sends nothing",
    ("monitoring.notificationchannel", "send_test"): "a test notification",
}


def _assert_recorded(mark, user, what) -> None:
    assert _new_events(mark, user), f"{what} left no event naming its actor"


def test_every_admin_add_change_delete_and_action_records_its_actor(client, staff_user):
    client.force_login(staff_user)
    world = AdminWorld(staff_user)
    walked = []
    request = client.get(reverse("admin:index")).wsgi_request
    for model, model_admin in admin.site._registry.items():
        label = model._meta.label_lower
        if label in NOT_EVENTS:
            continue
        info = f"{model._meta.app_label}_{model._meta.model_name}"
        if model_admin.has_add_permission(request) and label != "contacts.contactimport":
            assert label in world.add, f"{label}: teach this test what its add form needs"
            page = client.get(reverse(f"admin:{info}_add"))
            data = {**_form_data(page), **world.add[label]()}
            mark = _mark()
            response = client.post(reverse(f"admin:{info}_add"), data)
            assert response.status_code == 302, (label, _errors(response))
            _assert_recorded(mark, staff_user, f"adding a {label}")
            walked.append((label, "add"))
        if label in world.make:
            obj = world.make[label]()
            if model_admin.has_change_permission(request, obj):
                assert label in world.change, f"{label}: teach this test what to change"
                url = reverse(f"admin:{info}_change", args=[obj.pk])
                data = {**_form_data(client.get(url)), **world.change[label]}
                mark = _mark()
                response = client.post(url, data)
                assert response.status_code == 302, (label, _errors(response))
                _assert_recorded(mark, staff_user, f"changing a {label}")
                walked.append((label, "change"))
            obj = world.make[label]()
            if model_admin.has_delete_permission(request, obj):
                mark = _mark()
                url = reverse(f"admin:{info}_delete", args=[obj.pk])
                response = client.post(url, {"post": "yes"})
                assert response.status_code == 302, (label, response.status_code)
                _assert_recorded(mark, staff_user, f"deleting a {label}")
                walked.append((label, "delete"))
        changelist = client.get(reverse(f"admin:{info}_changelist"))
        for action in model_admin.get_actions(changelist.wsgi_request) or {}:
            if (label, action) in NO_CHANGE_ACTIONS:
                continue
            assert label in world.make, f"{label}.{action}: teach this test its object"
            obj = world.action_object(label, action)
            extra = world.action_data.get(action, lambda: {})()
            mark = _mark()
            response = client.post(
                reverse(f"admin:{info}_changelist"),
                {"action": action, "_selected_action": [obj.pk], "post": "yes", **extra},
            )
            assert response.status_code in (200, 302), (label, action, response.status_code)
            _assert_recorded(mark, staff_user, f"the action {action} on a {label}")
            walked.append((label, action))
    assert len(walked) >= 30, walked


def _errors(response) -> object:
    context = getattr(response, "context", None)
    if context and "adminform" in context:
        return context["adminform"].form.errors
    return response.status_code


def test_the_admins_own_pages_that_change_state_record_their_actor(client, staff_user):
    """The pages model admins add with ``get_urls()`` (buttons, uploads, lifts,
    rollbacks, the dashboard's alert buttons): each POST that changes state."""
    client.force_login(staff_user)
    world = World(staff_user)
    config_row = SystemConfig.objects.get(key="queue.batch_size")
    pages = [
        (
            reverse("admin:dispatch_task_do", args=[task.pk, action]),
            {},
        )
        for action, task in (
            ("queue", world.draft()),
            ("pause", world.queued()),
            ("resume", world.paused()),
            ("cancel", world.queued()),
            ("duplicate", world.draft()),
        )
    ] + [
        (
            reverse("admin:contacts_contactimport_upload"),
            {"file": _csv("a.csv", "email\nadmin-import@walk.test\n"), "tags": "walk"},
        ),
        (
            reverse("admin:deliverability_suppression_lift", args=[world.suppression().pk]),
            {"reason": "walk"},
        ),
        (
            reverse("admin:deliverability_suppression_import"),
            {"file": _csv("s.csv", "email\nadmin-supp@walk.test\n")},
        ),
        (
            reverse(
                "admin:config_systemconfig_rollback",
                args=[config_row.pk, world.config_history_id()],
            ),
            {"reason": "walk"},
        ),
        (reverse("admin:dashboard-alert", args=[world.alert().pk, "acknowledge"]), {}),
        (reverse("admin:dashboard-alert", args=[world.alert().pk, "resolve"]), {}),
    ]
    for url, data in pages:
        mark = _mark()
        response = client.post(url, data)
        assert response.status_code in (200, 302), (url, response.status_code)
        _run_queued_imports()
        _assert_recorded(mark, staff_user, f"POST {url}")


def test_the_audit_trail_of_a_task_says_who_paused_it(client, staff_user):
    """The admin's per-object audit trail (``apps.events.admin.AuditTrailMixin``) on the
    task pages: who paused this task, and when."""
    client.force_login(staff_user)
    task = World(staff_user).queued()
    client.post(reverse("admin:dispatch_task_do", args=[task.pk, "pause"]))
    change = client.get(reverse("admin:dispatch_task_change", args=[task.pk])).content.decode()
    trail_url = reverse("admin:dispatch_task_audit_trail", args=[task.pk])
    assert trail_url in change
    trail = client.get(trail_url).content.decode()
    assert "task.paused" in trail and staff_user.username in trail
    assert "task.queued" in trail


def test_every_audited_admin_offers_the_audit_trail():
    from apps.events.admin import AuditTrailMixin

    audited = {
        "contacts.contact", "contacts.tag", "contacts.contactimport", "dispatch.task",
        "dispatch.subtask", "dispatch.deadletter", "services.emailservice", "services.pool",
        "config.systemconfig", "monitoring.alertrule", "monitoring.notificationchannel",
        "monitoring.alert", "deliverability.suppression",
    }  # fmt: skip
    offering = {
        model._meta.label_lower
        for model, model_admin in admin.site._registry.items()
        if isinstance(model_admin, AuditTrailMixin)
    }
    assert audited <= offering, audited - offering

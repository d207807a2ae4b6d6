"""The task detail's own read path (``selectors.owned_task_detail`` and the serializers'
fields built once) and its plain GET answered on Django's request
(``apps.core.api.PlainTokenGetMixin``): it answers exactly what DRF's generic path and
DRF's dispatch answer."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIClient

from apps.contacts.models import Tag
from apps.dispatch import services
from apps.dispatch.api import tasks_with_related_ids
from apps.dispatch.models import SubTask, Task
from apps.dispatch.selectors import owned_task_detail, task_progress
from apps.dispatch.serializers import TaskDetailSerializer, TaskSerializer
from apps.dispatch.tests.helpers import chunk_in_progress

# An ``Accept`` for which DRF picks JSON too, but which is left to DRF's dispatch (only
# the ``Accept`` headers probes and clients send are taken before it).
DRF_JSON = {"HTTP_ACCEPT": "application/json, */*;q=0.5"}


@pytest.fixture
def task(user, pool, make_contacts) -> Task:
    """A queued task of ``user`` with every relation and every date set."""
    contacts = make_contacts(user, 6)
    make_contacts(user, 1, tag="skip", prefix="skip")
    include = Tag.objects.get(owner=user, name="list")
    exclude = Tag.objects.get(owner=user, name="skip")
    created = services.task_create(
        owner=user,
        actor=user,
        name="Détail ✓",
        subject="Hello {{ contact.first_name }}",
        body_text="Hi",
        body_html="<p>Hi</p>",
        from_name="Ops",
        include_tags=[include.pk],
        exclude_tags=[exclude.pk],
        contacts=[contacts[3].pk, contacts[1].pk],
        pool=pool.pk,
        priority=-7,
        scheduled_at=None,
        tracking=False,
    )
    services.task_queue(task=created)
    Task.objects.filter(pk=created.pk).update(
        scheduled_at=timezone.now() - timedelta(minutes=5),
        started_at=timezone.now(),
    )
    return created


def _generic(serializer_class, task_id: int) -> dict:
    """DRF's own representation (fields built from the model for this instance) of the
    task read through the ORM."""
    instance = tasks_with_related_ids(Task.objects.filter(pk=task_id)).get()
    return serializers.ModelSerializer.to_representation(serializer_class(), instance)


def test_the_detail_answers_what_drfs_generic_path_answers(api, task):
    body = api.get(f"/api/tasks/{task.pk}/").json()

    expected = _generic(TaskDetailSerializer, task.pk)
    assert body == expected
    assert list(body) == list(expected)  # same fields, same order
    assert body["contacts"] == sorted(body["contacts"]) and len(body["contacts"]) == 2
    assert body["exclude_tags"] and body["include_tags"]
    assert body["scheduled_at"].endswith("Z") and body["started_at"] is not None
    assert body["progress"] == task_progress(task) and body["progress"]["total"] == 6


def test_the_list_and_the_detail_show_a_task_alike(api, task):
    listed = api.get("/api/tasks/").json()["results"]
    assert listed == [api.get(f"/api/tasks/{task.pk}/").json()]


def test_the_serializer_without_progress_matches_drfs_too(task):
    instance = tasks_with_related_ids(Task.objects.filter(pk=task.pk)).get()
    assert TaskSerializer(instance).data == _generic(TaskSerializer, task.pk)
    assert "progress" not in TaskSerializer(instance).data


def test_a_task_without_relations_reads_them_empty_and_dates_null(api, user, pool, make_contacts):
    make_contacts(user, 1)
    draft = services.task_create(
        owner=user,
        actor=user,
        name="bare",
        subject="s",
        body_text="b",
        body_html="",
        from_name="",
        include_tags=[Tag.objects.get(owner=user, name="list").pk],
        exclude_tags=[],
        contacts=[],
        pool=None,
        priority=0,
        scheduled_at=None,
        tracking=True,
    )
    body = api.get(f"/api/tasks/{draft.pk}/").json()
    assert body == _generic(TaskDetailSerializer, draft.pk)
    assert body["exclude_tags"] == [] and body["contacts"] == []
    assert body["scheduled_at"] is None and body["queued_at"] is None


def test_progress_of_a_chunk_on_the_wire_is_read_as_the_selector_reads_it(api, task):
    subtasks = list(SubTask.objects.filter(task=task).order_by("id")[:4])
    chunk_in_progress(subtasks, position=2, expired=False)

    progress = api.get(f"/api/tasks/{task.pk}/").json()["progress"]

    assert progress == task_progress(task)
    assert (progress["sent"], progress["sending"], progress["allocated"]) == (2, 1, 1)


def test_another_users_task_answers_the_same_404_as_a_missing_one(api, other_api, task):
    theirs = other_api.get(f"/api/tasks/{task.pk}/")
    missing = api.get("/api/tasks/999999/")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()
    assert theirs.json()["code"] == "not_found"
    assert theirs.json()["detail"] == "No Task matches the given query."


def test_the_selector_reads_only_the_owners_task(user, other_user, task):
    assert owned_task_detail(other_user, task.pk) is None
    mine = owned_task_detail(user, task.pk)
    assert mine.pk == task.pk and mine.owner_id == user.pk
    assert mine.progress_counts == task_progress(task)


def test_a_sending_tasks_progress_is_read_once_a_second_per_process(
    api, task, settings, django_assert_num_queries
):
    """Pollers of a sending task share one progress reading per second per process; the
    status is read fresh each time, so a paused task shows its own counts at once."""
    settings.EDM_PROGRESS_SECONDS = 1
    Task.objects.filter(pk=task.pk).update(status=Task.Status.SENDING)
    subtasks = list(SubTask.objects.filter(task=task).order_by("id")[:4])
    chunk = chunk_in_progress(subtasks, position=0, expired=False)
    first = api.get(f"/api/tasks/{task.pk}/").json()["progress"]
    assert (first["sent"], first["sending"]) == (0, 1)

    type(chunk).objects.filter(pk=chunk.pk).update(position=2)  # two more accepted
    with django_assert_num_queries(2):  # the token's user, then the task: no progress read
        again = api.get(f"/api/tasks/{task.pk}/").json()
    assert again["progress"] == first and again["status"] == "sending"

    services.task_pause(task=task)  # the status changes: the counts are read at once
    paused = api.get(f"/api/tasks/{task.pk}/").json()
    assert paused["status"] == "paused"
    assert paused["progress"] == task_progress(task) and paused["progress"]["sent"] == 2

    settings.EDM_PROGRESS_SECONDS = 0  # off: every request reads
    Task.objects.filter(pk=task.pk).update(status=Task.Status.SENDING)
    assert api.get(f"/api/tasks/{task.pk}/").json()["progress"] == task_progress(task)


def test_any_tasks_progress_is_read_once_a_second_while_its_row_is_unchanged(
    api, task, settings, django_assert_num_queries
):
    """A queued task's pollers share a progress reading a second per process too; a
    change of the task's row (its status, any field) reads the progress at once."""
    settings.EDM_PROGRESS_SECONDS = 1
    url = f"/api/tasks/{task.pk}/"
    assert api.get(url).json()["progress"]["pending"] == 6  # read whole, with its progress
    SubTask.objects.filter(task=task, status="pending")[:1].get().delete()  # not the row
    with django_assert_num_queries(2):  # the token's user, then the row's version only
        again = api.get(url).json()
    assert again["progress"]["pending"] == 6 and again["progress"] != task_progress(task)

    Task.objects.filter(pk=task.pk).update(priority=5)  # the row changes: read at once
    changed = api.get(url).json()
    assert changed["priority"] == 5 and changed["progress"] == task_progress(task)
    assert changed["progress"]["pending"] == 5

    settings.EDM_PROGRESS_SECONDS = 0  # off: every request reads
    SubTask.objects.filter(task=task, status="pending")[:1].get().delete()
    assert api.get(url).json()["progress"] == task_progress(task)


# --- the plain GET, answered on Django's request --------------------------------------


def _answered_before_drf(response) -> bool:
    """DRF's dispatch renders for its own request wrapper; the plain path for Django's, or
    answers the bytes it rendered before (a plain ``HttpResponse``)."""
    context = getattr(response, "renderer_context", None)
    return context is None or not isinstance(context["request"], Request)


def _both_paths(client, url: str, **extra):
    """The plain path's answer and DRF's dispatch's to the same request."""
    plain = client.get(url, **extra)
    drf = client.get(url, **{**extra, **DRF_JSON})
    assert _answered_before_drf(plain) and not _answered_before_drf(drf)
    return plain, drf


def _assert_same_answer(plain, drf) -> None:
    assert (plain.status_code, plain.content) == (drf.status_code, drf.content)
    # Every header, middleware's included; each request has its own id.
    headers = [{k: v for k, v in r.items() if k != "X-Request-ID"} for r in (plain, drf)]
    assert headers[0] == headers[1]
    assert len(headers[0]) >= 5


@pytest.fixture
def operators_task(staff_user, pool, make_contacts) -> Task:
    make_contacts(staff_user, 3)
    created = services.task_create(
        owner=staff_user,
        actor=staff_user,
        name="ops",
        subject="s",
        body_text="b",
        body_html="",
        from_name="",
        include_tags=[Tag.objects.get(owner=staff_user, name="list").pk],
        exclude_tags=[],
        contacts=[],
        pool=pool.pk,
        priority=0,
        scheduled_at=None,
        tracking=True,
    )
    services.task_queue(task=created)
    return created


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
def test_a_tenants_plain_get_is_drfs_answer_byte_for_byte(api, task, accept):
    extra = {} if accept is None else {"HTTP_ACCEPT": accept}
    plain, drf = _both_paths(api, f"/api/tasks/{task.pk}/", **extra)
    _assert_same_answer(plain, drf)
    assert plain.status_code == 200 and plain["Content-Type"] == "application/json"
    assert plain.json() == _generic(TaskDetailSerializer, task.pk)


def test_an_operators_plain_get_is_drfs_answer_and_scoped_to_its_own_tasks(
    staff_api, operators_task, task
):
    _assert_same_answer(*_both_paths(staff_api, f"/api/tasks/{operators_task.pk}/"))
    plain, drf = _both_paths(staff_api, f"/api/tasks/{task.pk}/")  # a tenant's task
    _assert_same_answer(plain, drf)
    assert plain.status_code == 404


def test_a_sending_tasks_plain_get_is_drfs_answer(api, task, settings):
    Task.objects.filter(pk=task.pk).update(status=Task.Status.SENDING)
    subtasks = list(SubTask.objects.filter(task=task).order_by("id")[:4])
    chunk_in_progress(subtasks, position=2, expired=False)
    for seconds in (0, 1):  # every request reads the progress; once a second
        settings.EDM_PROGRESS_SECONDS = seconds
        plain, drf = _both_paths(api, f"/api/tasks/{task.pk}/")
        _assert_same_answer(plain, drf)
        progress = plain.json()["progress"]
        assert (progress["sent"], progress["sending"], progress["allocated"]) == (2, 1, 1)


def test_another_tenants_task_is_the_same_404_on_the_plain_path(api, other_api, task):
    theirs, drf = _both_paths(other_api, f"/api/tasks/{task.pk}/")
    _assert_same_answer(theirs, drf)
    missing, _ = _both_paths(api, "/api/tasks/999999/")
    assert theirs.status_code == 404 and theirs.content == missing.content
    assert theirs.json()["detail"] == "No Task matches the given query."


def test_an_id_beyond_bigint_is_the_same_404_on_the_plain_path(api, task):
    plain, drf = _both_paths(api, f"/api/tasks/{2**63}/")
    _assert_same_answer(plain, drf)
    assert plain.status_code == 404 and plain.json()["code"] == "not_found"


@pytest.mark.parametrize(
    "authorization",
    ["Token not-a-token", "Token two words", "token not-a-token"],
)
def test_a_bad_token_is_drfs_401_on_the_plain_path(task, authorization):
    client = APIClient()
    plain, drf = _both_paths(client, f"/api/tasks/{task.pk}/", HTTP_AUTHORIZATION=authorization)
    _assert_same_answer(plain, drf)
    assert plain.status_code == 401 and plain["WWW-Authenticate"] == "Token"
    assert set(plain.json()) == {"detail", "code", "errors"}


def test_an_inactive_users_token_is_refused_on_the_plain_path(api, user, task):
    user.is_active = False
    user.save()
    plain, drf = _both_paths(api, f"/api/tasks/{task.pk}/")
    _assert_same_answer(plain, drf)
    assert plain.status_code == 401 and plain.json()["detail"] == "User inactive or deleted."


@pytest.mark.parametrize("scope", ["user", "address"])
def test_the_plain_path_counts_and_enforces_both_throttles(rates, api, task, scope):
    rates(**{scope: "3/min"})
    url = f"/api/tasks/{task.pk}/"
    assert [api.get(url).status_code for _ in range(2)] == [200, 200]
    assert api.get(url, **DRF_JSON).status_code == 200  # one count for both paths
    plain, drf = _both_paths(api, url)
    _assert_same_answer(plain, drf)
    assert plain.status_code == 429 and int(plain["Retry-After"]) > 0
    assert plain.json()["code"] == "throttled"


def test_a_throttled_tenant_leaves_others_alone(rates, api, other_api, task):
    rates(user="1/min")
    assert api.get(f"/api/tasks/{task.pk}/").status_code == 200
    assert api.get(f"/api/tasks/{task.pk}/").status_code == 429
    assert other_api.get(f"/api/tasks/{task.pk}/").status_code == 404


@pytest.mark.parametrize(
    "extra",
    [
        {"HTTP_ACCEPT": "text/html"},
        {"QUERY_STRING": "format=json"},
        {"HTTP_ACCEPT": "application/json; indent=4"},
    ],
)
def test_anything_unusual_is_left_to_drf(api, task, extra):
    response = api.get(f"/api/tasks/{task.pk}/", **extra)
    assert response.status_code == 200 and not _answered_before_drf(response)


def test_a_session_or_no_credentials_is_left_to_drf(user, task):
    client = APIClient()
    anonymous = client.get(f"/api/tasks/{task.pk}/")
    assert anonymous.status_code == 401 and not _answered_before_drf(anonymous)
    client.force_login(user)
    session = client.get(f"/api/tasks/{task.pk}/")
    assert session.status_code == 200 and not _answered_before_drf(session)
    assert session.json() == api_json(task)


def api_json(task: Task) -> dict:
    return _generic(TaskDetailSerializer, task.pk)


def test_other_methods_are_drfs(api, task):
    response = api.post(f"/api/tasks/{task.pk}/")
    assert response.status_code == 405 and response.json()["code"] == "method_not_allowed"
    assert api.head(f"/api/tasks/{task.pk}/").status_code == 200


def test_a_plain_get_with_the_token_remembered_is_one_statement(
    api, task, settings, django_assert_num_queries
):
    settings.EDM_TOKEN_CACHE_SECONDS = 5
    api.get(f"/api/tasks/{task.pk}/")  # the token is looked up once
    with django_assert_num_queries(1):  # the task's version and its progress
        response = api.get(f"/api/tasks/{task.pk}/")
    assert _answered_before_drf(response) and response.json()["progress"]["total"] == 6


def test_the_detail_statements_are_prepared_once_per_connection(api, task, settings):
    with CaptureQueriesContext(connection) as queries:
        first = api.get(f"/api/tasks/{task.pk}/")  # read whole
        again = api.get(f"/api/tasks/{task.pk}/")  # its version (and progress) only
    executed = [q["sql"] for q in queries.captured_queries if "authtoken" not in q["sql"]]
    assert len(executed) == 2
    assert executed[0].startswith("EXECUTE edm_task_detail(")
    assert executed[1].startswith("EXECUTE edm_task_detail_version(")
    settings.EDM_DATABASE_POOLER = "transaction"  # nothing prepared outlives a transaction
    with CaptureQueriesContext(connection) as queries:
        pooled = api.get(f"/api/tasks/{task.pk}/")
    assert queries.captured_queries[-1]["sql"].startswith("SELECT t.xmin::text")
    assert pooled.content == again.content == first.content


# --- what each process remembers: the task's fields by row version, the rendering ------


def test_a_tasks_fields_travel_again_only_when_its_row_changed(user, task):
    from apps.dispatch import selectors

    first = owned_task_detail(user, task.pk)
    version, values, relations = selectors._remembered_fields[task.pk]
    assert first.row_version == version and first.name == "Détail ✓"
    # The process's copy answers while the row is the same (only its version was read)...
    name = [field.attname for field in Task._meta.concrete_fields].index("name")
    kept = (*values[:name], "kept", *values[name + 1 :])
    selectors._remembered_fields[task.pk] = (version, kept, relations)
    assert owned_task_detail(user, task.pk).name == "kept"
    # ...and any write of the row, the ORM's or any other statement's, is read at once.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE dispatch_task SET name = 'renamed' WHERE id = %s", [task.pk])
    again = owned_task_detail(user, task.pk)
    assert again.name == "renamed" and again.row_version != version
    Task.objects.filter(pk=task.pk).update(name="Détail ✓")  # same content, a new version
    assert owned_task_detail(user, task.pk).name == "Détail ✓"


def test_a_change_of_a_tasks_relations_changes_its_rows_version(user, task, make_contacts):
    """Adding or removing a tag or a contact, and deleting a contact or a tag that the
    task names (their cascade), writes the task's row: the detail reads it whole."""
    from apps.dispatch import selectors

    extra = make_contacts(user, 2, tag="extra", prefix="extra")
    tag = Tag.objects.get(owner=user, name="extra")
    changes = [
        lambda: task.include_tags.add(tag),
        lambda: task.exclude_tags.remove(*task.exclude_tags.all()),
        lambda: task.contacts.add(*extra),
        extra[0].delete,
        tag.delete,
        lambda: task.contacts.set([]),
    ]
    for change in changes:
        before = owned_task_detail(user, task.pk).row_version
        change()
        after = owned_task_detail(user, task.pk)
        assert after.row_version != before
        assert selectors._remembered_fields[task.pk][0] == after.row_version
        generic = _generic(TaskSerializer, task.pk)
        shown = (after.include_tags_ids, after.exclude_tags_ids, after.contacts_ids)
        assert shown == (generic["include_tags"], generic["exclude_tags"], generic["contacts"])
    assert after.contacts_ids == [] and after.include_tags_ids != []


def test_a_remembered_task_is_still_only_its_owners(user, other_user, task):
    assert owned_task_detail(user, task.pk) is not None  # remembered
    assert owned_task_detail(other_user, task.pk) is None
    Task.objects.filter(pk=task.pk).delete()
    assert owned_task_detail(user, task.pk) is None


def test_a_task_with_big_bodies_is_read_in_full_each_time(user, task):
    from apps.dispatch import selectors

    Task.objects.filter(pk=task.pk).update(body_html="x" * (selectors._REMEMBERED_WEIGHT_MAX + 1))
    assert len(owned_task_detail(user, task.pk).body_html) == selectors._REMEMBERED_WEIGHT_MAX + 1
    assert task.pk not in selectors._remembered_fields


def test_a_task_with_many_contacts_is_read_in_full_each_time(user, task, make_contacts):
    """Ids weigh too: a task naming thousands of contacts is not kept by every process."""
    from apps.dispatch import selectors

    many = make_contacts(user, selectors._REMEMBERED_WEIGHT_MAX // 8, tag=None, prefix="many")
    task.contacts.add(*many)
    detail = owned_task_detail(user, task.pk)
    assert len(detail.contacts_ids) == len(many) + 2
    assert task.pk not in selectors._remembered_fields
    task.contacts.remove(*many)
    assert owned_task_detail(user, task.pk).contacts_ids == sorted(
        task.contacts.values_list("pk", flat=True)
    )
    assert task.pk in selectors._remembered_fields


def test_the_plain_path_renders_once_until_the_detail_changes(api, task, settings):
    """The bytes rendered for a task answer its next plain GETs while nothing the detail
    shows changed; a change of the row, of its relations or of its progress is rendered
    anew, and the answer is DRF's again."""
    from apps.core import api as core_api
    from apps.dispatch.api import TaskDetailView

    url = f"/api/tasks/{task.pk}/"
    _assert_same_answer(*_both_paths(api, url))
    remembered, drf = _both_paths(api, url)  # the bytes rendered before, DRF's headers
    assert not isinstance(remembered, Response)
    _assert_same_answer(remembered, drf)
    name = (TaskDetailView, task.pk)
    key, content, content_type = core_api._renderings[name]
    assert content_type == "application/json"
    core_api._renderings[name] = (key, content.replace(b"Ops", b"Kept"), content_type)
    assert b'"from_name":"Kept"' in api.get(url).content  # the remembered bytes answer
    assert b'"from_name":"Ops"' in api.get(url, **DRF_JSON).content  # DRF renders its own

    changes = [
        lambda: Task.objects.filter(pk=task.pk).update(priority=3),
        task.exclude_tags.clear,
        lambda: SubTask.objects.filter(task=task, status="pending")[:1].get().delete(),
    ]
    for change in changes:
        key, content, content_type = core_api._renderings[name]
        core_api._renderings[name] = (key, content.replace(b"Ops", b"Kept"), content_type)
        change()
        plain, drf = _both_paths(api, url)
        _assert_same_answer(plain, drf)
        assert b'"from_name":"Ops"' in plain.content
    assert plain.json() == _generic(TaskDetailSerializer, task.pk)


def test_a_big_rendering_is_not_remembered(api, task):
    from apps.core import api as core_api
    from apps.dispatch.api import TaskDetailView

    Task.objects.filter(pk=task.pk).update(body_text="y" * core_api._RENDERING_MAX_BYTES)
    _assert_same_answer(*_both_paths(api, f"/api/tasks/{task.pk}/"))
    assert (TaskDetailView, task.pk) not in core_api._renderings

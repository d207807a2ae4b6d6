"""The dispatch REST API end to end: tasks, their subtasks, the dead-letter queue."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from drf_spectacular.drainage import GENERATOR_STATS

from apps.contacts.models import Contact, ContactTag, Tag
from apps.dispatch import services
from apps.dispatch.models import DeadLetter, SubTask, Task
from apps.dispatch.recovery import recover_stuck
from apps.dispatch.selectors import task_progress
from apps.dispatch.tests.helpers import chunk_in_progress
from apps.services.models import Pool

TEMPLATES = {
    "subject": "Hello {{ contact.first_name }}",
    "body_text": "Hi {{ contact.first_name }}",
    "body_html": "<p>Hi {{ contact.first_name }}</p>",
}


@pytest.fixture
def tag(user, pool, make_contacts):
    """Tag "list" of ``user`` with 5 active contacts (the default pool exists)."""
    make_contacts(user, 5)
    return Tag.objects.get(owner=user, name="list")


@pytest.fixture
def other_tag(other_user, make_contacts):
    make_contacts(other_user, 2, tag="theirs")
    return Tag.objects.get(owner=other_user, name="theirs")


def body(**extra) -> dict:
    return {"name": "Newsletter", **TEMPLATES, **extra}


def create_task(api, tag, **extra) -> dict:
    response = api.post("/api/tasks/", body(include_tags=[tag.pk], **extra), format="json")
    assert response.status_code == 201, response.data
    return response.data


def queued_task(api, tag, **extra) -> dict:
    task = create_task(api, tag, **extra)
    response = api.post(f"/api/tasks/{task['id']}/queue")
    assert response.status_code == 200, response.data
    return response.data


def errors_of(response) -> dict:
    """Field errors, in the one error shape whether from a serializer or a service."""
    assert set(response.data) >= {"detail", "code", "errors"}, response.data
    return response.data["errors"]


def make_dead(task_id: int, *, error_types: list[str]) -> list[DeadLetter]:
    """Dead-letter the first subtasks of a task, as the dispatcher does when attempts run
    out: the subtask becomes ``dead`` and a pending DeadLetter keeps its history."""
    entries = []
    subtasks = SubTask.objects.filter(task_id=task_id, status="pending").order_by("id")
    for subtask, error_type in zip(subtasks, error_types, strict=False):
        subtask.status = SubTask.Status.DEAD
        subtask.attempts = 6
        subtask.last_error = "451 try later"
        subtask.save()
        entries.append(
            DeadLetter.objects.create(
                subtask=subtask,
                task_id=task_id,
                owner_id=subtask.owner_id,
                error_type=error_type,
                error_message="451 try later",
                history=[{"attempt": n, "error": "451"} for n in range(1, 7)],
            )
        )
    return entries


# --- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/api/tasks/"),
        ("post", "/api/tasks/"),
        ("get", "/api/tasks/1/"),
        ("post", "/api/tasks/1/queue"),
        ("post", "/api/tasks/1/pause"),
        ("post", "/api/tasks/1/resume"),
        ("post", "/api/tasks/1/cancel"),
        ("post", "/api/tasks/1/requeue-unknown"),
        ("get", "/api/tasks/1/subtasks/"),
        ("get", "/api/dlq"),
        ("get", "/api/dlq/stats"),
        ("post", "/api/dlq/1/reprocess"),
        ("post", "/api/dlq/reprocess-all"),
    ],
)
def test_every_endpoint_requires_authentication(anon_api, method, url):
    response = getattr(anon_api, method)(url)
    assert response.status_code == 401


# --- create -----------------------------------------------------------------------------------


def test_create_answers_201_with_a_draft_task_and_zero_progress(
    api, tag, pool, make_contacts, user
):
    extra = make_contacts(user, 1, tag=None, prefix="x")[0]
    minus = Tag.objects.create(owner=user, name="minus")
    response = api.post(
        "/api/tasks/",
        body(
            include_tags=[tag.pk],
            exclude_tags=[minus.pk],
            contacts=[extra.pk],
            priority=5,
            pool=pool.pk,
        ),
        format="json",
    )

    assert response.status_code == 201, response.data
    data = response.data
    assert data["status"] == "draft"
    assert (data["include_tags"], data["exclude_tags"], data["contacts"]) == (
        [tag.pk],
        [minus.pk],
        [extra.pk],
    )
    assert (data["pool"], data["priority"], data["total"]) == (pool.pk, 5, 0)
    assert data["progress"]["total"] == 0
    task = Task.objects.get(pk=data["id"])
    assert (task.owner, task.subject) == (user, TEMPLATES["subject"])


def test_create_accepts_the_pool_by_name(api, tag, pool):
    data = create_task(api, tag, pool=pool.name)
    assert data["pool"] == pool.pk


@pytest.mark.parametrize("field", ["include_tags", "exclude_tags"])
def test_create_refuses_another_users_tag_naming_the_field(api, tag, other_tag, field):
    ids = {"include_tags": [tag.pk], field: [other_tag.pk]}
    response = api.post("/api/tasks/", body(**ids), format="json")
    assert response.status_code == 400
    assert str(other_tag.pk) in errors_of(response)[field][0]
    assert not Task.objects.exists()


def test_create_refuses_another_users_contact(api, tag, other_tag):
    theirs = other_tag.contacts.first()
    response = api.post("/api/tasks/", body(contacts=[theirs.pk]), format="json")
    assert response.status_code == 400
    assert "contacts" in errors_of(response)
    assert not Task.objects.exists()


def test_create_refuses_a_pool_not_open_to_the_user(api, tag, other_user):
    private = Pool.objects.create(name="dedicated", is_shared=False)
    private.owners.add(other_user)
    response = api.post("/api/tasks/", body(include_tags=[tag.pk], pool=private.pk), format="json")
    assert response.status_code == 400
    assert "not open" in errors_of(response)["pool"][0]


@pytest.mark.parametrize("pool", ["nope", 999999, True])
def test_create_refuses_an_unknown_pool(api, tag, pool):
    response = api.post("/api/tasks/", body(include_tags=[tag.pk], pool=pool), format="json")
    assert response.status_code == 400
    assert "pool" in errors_of(response)


@pytest.mark.parametrize(
    ("field", "source", "line"),
    [
        ("subject", "Hello {{ contact|nosuchfilter }}", 1),
        ("body_text", "Hi\nthere {% if %}\n", 2),
        ("body_html", "<p>a</p>\n<p>b</p>\n{% for x in %}", 3),
    ],
)
def test_create_refuses_a_template_error_naming_the_field_and_line(api, tag, field, source, line):
    response = api.post(
        "/api/tasks/", body(include_tags=[tag.pk], **{field: source}), format="json"
    )
    assert response.status_code == 400
    message = errors_of(response)[field][0]
    assert "template error" in message
    if line:
        assert f"line {line}" in message
    assert not Task.objects.exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"subject": ""}, "subject"),
        ({"body_text": "", "body_html": ""}, "body_text"),
        ({"priority": 101}, "priority"),
        ({"priority": "high"}, "priority"),
        ({"include_tags": "1"}, "include_tags"),
        ({"include_tags": ["a"]}, "include_tags"),
        ({"contacts": [0]}, "contacts"),
        ({"scheduled_at": "tomorrow"}, "scheduled_at"),
        ({"include_tags": []}, "include_tags"),
    ],
)
def test_create_refuses_bad_input_naming_the_field(api, tag, payload, field):
    data = body(include_tags=[tag.pk])
    data.update(payload)
    response = api.post("/api/tasks/", data, format="json")
    assert response.status_code == 400
    assert field in errors_of(response), response.data
    assert not Task.objects.exists()


def test_create_refuses_a_missing_subject(api, tag):
    data = body(include_tags=[tag.pk])
    del data["subject"]
    response = api.post("/api/tasks/", data, format="json")
    assert response.status_code == 400
    assert "subject" in errors_of(response)


# --- list and detail ----------------------------------------------------------------------------


def test_list_shows_only_own_tasks_paginated_and_filtered_by_status(api, other_api, tag, other_tag):
    draft = create_task(api, tag, name="draft")
    queued = queued_task(api, tag, name="queued")
    create_task(other_api, other_tag, name="theirs")

    response = api.get("/api/tasks/")
    assert response.status_code == 200
    assert [t["id"] for t in response.data["results"]] == [queued["id"], draft["id"]]
    assert [t["progress"]["pending"] for t in response.data["results"]] == [
        queued["progress"]["pending"],
        0,
    ]
    assert queued["progress"]["pending"] > 0
    assert response.data["next"] is None and response.data["count"] == 2

    page = api.get("/api/tasks/", {"page_size": 1})
    assert len(page.data["results"]) == 1 and page.data["next"]

    filtered = api.get("/api/tasks/", {"status": "queued"})
    assert [t["id"] for t in filtered.data["results"]] == [queued["id"]]


def test_list_refuses_an_unknown_status_filter(api):
    response = api.get("/api/tasks/", {"status": "flying"})
    assert response.status_code == 400
    assert "status" in response.data["errors"]


def test_detail_has_status_and_progress_that_add_up(api, tag, user, make_contacts):
    gone = make_contacts(user, 2, tag=None, prefix="gone", status="unsubscribed")
    task = queued_task(api, tag, contacts=[c.pk for c in gone])

    response = api.get(f"/api/tasks/{task['id']}/")

    assert response.status_code == 200
    progress = response.data["progress"]
    assert response.data["status"] == "queued"
    assert set(progress) == {
        "total",
        "pending",
        "allocated",
        "sending",
        "sent",
        "failed",
        "dead",
        "skipped",
        "cancelled",
        "unknown",
    }
    assert (progress["pending"], progress["skipped"], progress["total"]) == (5, 2, 7)
    assert progress["total"] == sum(v for k, v in progress.items() if k != "total")


def test_detail_of_another_users_task_is_404(api, other_api, tag):
    task = create_task(api, tag)
    assert other_api.get(f"/api/tasks/{task['id']}/").status_code == 404
    assert api.get("/api/tasks/999999/").status_code == 404


# --- lifecycle ------------------------------------------------------------------------------


def test_queue_materializes_the_recipients(api, tag):
    task = create_task(api, tag)
    response = api.post(f"/api/tasks/{task['id']}/queue")
    assert response.status_code == 200
    assert response.data["status"] == "queued"
    assert (response.data["total"], response.data["progress"]["pending"]) == (5, 5)
    assert SubTask.objects.filter(task_id=task["id"], status="pending").count() == 5


def test_queue_with_a_future_time_schedules_the_task(api, tag):
    later = (timezone.now() + timedelta(hours=1)).isoformat()
    task = queued_task(api, tag, scheduled_at=later)
    assert task["status"] == "scheduled"


def test_queue_twice_is_a_400_naming_the_state(api, tag):
    task = queued_task(api, tag)
    response = api.post(f"/api/tasks/{task['id']}/queue")
    assert response.status_code == 400
    assert "only a draft task can be queued" in response.data["errors"]["status"][0]


def test_pause_resume_cancel_move_the_task_and_its_subtasks(api, tag):
    task = queued_task(api, tag)
    url = f"/api/tasks/{task['id']}"

    paused = api.post(f"{url}/pause")
    assert (paused.status_code, paused.data["status"]) == (200, "paused")
    resumed = api.post(f"{url}/resume")
    assert (resumed.status_code, resumed.data["status"]) == (200, "queued")
    cancelled = api.post(f"{url}/cancel")
    assert (cancelled.status_code, cancelled.data["status"]) == (200, "cancelled")
    assert cancelled.data["progress"]["cancelled"] == 5
    assert cancelled.data["progress"]["pending"] == 0


@pytest.mark.parametrize(
    ("setup", "action", "reason"),
    [
        ([], "pause", "a draft task cannot be paused"),
        ([], "resume", "a draft task cannot be resumed"),
        (["queue"], "resume", "a queued task cannot be resumed"),
        (["queue", "cancel"], "cancel", "a cancelled task cannot be cancelled"),
        (["queue", "cancel"], "pause", "a cancelled task cannot be paused"),
    ],
)
def test_a_transition_from_the_wrong_state_is_a_400_with_the_reason(
    api, tag, setup, action, reason
):
    task = create_task(api, tag)
    for step in setup:
        assert api.post(f"/api/tasks/{task['id']}/{step}").status_code == 200
    before = Task.objects.get(pk=task["id"]).status

    response = api.post(f"/api/tasks/{task['id']}/{action}")

    assert response.status_code == 400
    assert response.data["errors"]["status"] == [reason]
    assert Task.objects.get(pk=task["id"]).status == before


@pytest.mark.parametrize("action", ["queue", "pause", "resume", "cancel", "requeue-unknown"])
def test_actions_on_another_users_task_are_404(api, other_api, tag, action):
    task = create_task(api, tag)
    response = other_api.post(f"/api/tasks/{task['id']}/{action}")
    assert response.status_code == 404
    assert Task.objects.get(pk=task["id"]).status == "draft"


# --- subtasks -----------------------------------------------------------------------------------


def test_subtasks_are_listed_in_keyset_pages(api, tag):
    task = queued_task(api, tag)
    url = f"/api/tasks/{task['id']}/subtasks/"

    first = api.get(url, {"page_size": 2})
    assert first.status_code == 200
    seen = [s["id"] for s in first.data["results"]]
    assert len(seen) == 2 and first.data["next"] and "count" not in first.data
    next_url = first.data["next"]
    while next_url:
        page = api.get(next_url)
        seen += [s["id"] for s in page.data["results"]]
        next_url = page.data["next"]

    expected = list(
        SubTask.objects.filter(task_id=task["id"]).order_by("id").values_list("id", flat=True)
    )
    assert seen == expected
    sample = first.data["results"][0]
    assert sample["status"] == "pending" and sample["message_id"].startswith("<")


def test_subtasks_filter_by_status(api, tag):
    task = queued_task(api, tag)
    make_dead(task["id"], error_types=["smtp_451"])
    url = f"/api/tasks/{task['id']}/subtasks/"

    dead = api.get(url, {"status": "dead"})
    assert [s["status"] for s in dead.data["results"]] == ["dead"]
    assert len(api.get(url, {"status": "pending"}).data["results"]) == 4
    bad = api.get(url, {"status": "lost"})
    assert bad.status_code == 400 and "status" in bad.data["errors"]


def test_subtasks_of_another_users_task_are_404(api, other_api, tag):
    task = queued_task(api, tag)
    assert other_api.get(f"/api/tasks/{task['id']}/subtasks/").status_code == 404


# --- requeue unknown ------------------------------------------------------------------------


def make_unknown(task_id: int, count: int) -> list[int]:
    """Subtasks of a task become ``unknown`` the way recovery leaves them: they were on
    the wire when their dispatcher's lease expired."""
    ids = list(
        SubTask.objects.filter(task_id=task_id).order_by("id").values_list("pk", flat=True)[:count]
    )
    for subtask in SubTask.objects.filter(pk__in=ids):
        chunk_in_progress([subtask], position=0)
    recover_stuck()
    assert SubTask.objects.filter(pk__in=ids, status="unknown").count() == count
    return ids


def test_requeue_unknown_sends_them_again_with_the_same_message_id(api, tag):
    task = queued_task(api, tag)
    ids = make_unknown(task["id"], 3)
    message_ids = dict(SubTask.objects.filter(pk__in=ids).values_list("pk", "message_id"))

    response = api.post(f"/api/tasks/{task['id']}/requeue-unknown")

    assert (response.status_code, response.data) == (200, {"requeued": 3})
    after = SubTask.objects.filter(pk__in=ids)
    assert {s.status for s in after} == {"pending"}
    assert {s.pk: s.message_id for s in after} == message_ids


def test_requeue_unknown_can_name_the_subtasks(api, tag):
    task = queued_task(api, tag)
    ids = make_unknown(task["id"], 3)
    response = api.post(
        f"/api/tasks/{task['id']}/requeue-unknown", {"subtask_ids": ids[:1]}, format="json"
    )
    assert response.data == {"requeued": 1}
    assert SubTask.objects.filter(pk__in=ids, status="unknown").count() == 2


def test_requeue_unknown_refuses_a_cancelled_task_and_bad_ids(api, tag):
    task = queued_task(api, tag)
    bad = api.post(
        f"/api/tasks/{task['id']}/requeue-unknown", {"subtask_ids": ["x"]}, format="json"
    )
    assert bad.status_code == 400 and "subtask_ids" in bad.data["errors"]
    make_unknown(task["id"], 1)
    services.task_cancel(task=task["id"])

    response = api.post(f"/api/tasks/{task['id']}/requeue-unknown")

    assert response.status_code == 400
    assert "cancelled" in response.data["errors"]["status"][0]
    assert SubTask.objects.filter(task_id=task["id"], status="unknown").count() == 1


def test_requeue_unknown_refuses_subtask_ids_of_another_task(api, tag):
    first, second = queued_task(api, tag), queued_task(api, tag)
    (theirs,) = make_unknown(second["id"], 1)

    response = api.post(
        f"/api/tasks/{first['id']}/requeue-unknown", {"subtask_ids": [theirs]}, format="json"
    )

    assert response.status_code == 400
    assert str(theirs) in errors_of(response)["subtask_ids"][0]
    assert SubTask.objects.get(pk=theirs).status == "unknown"


@pytest.mark.django_db(transaction=True)
def test_a_resumed_task_that_had_started_reads_sending_while_its_mail_goes_out(
    api, tag, make_contacts, user, make_service, smtp_sink
):
    from apps.dispatch.tests.helpers import ThreadedDispatcher, wait_until

    make_contacts(user, 30, tag=None, prefix="r")
    ContactTag.objects.bulk_create(
        ContactTag(tag=tag, contact=c) for c in Contact.objects.filter(email__startswith="r")
    )
    make_service(port=smtp_sink.port, sending_rate=0.1)
    task = queued_task(api, tag)
    seen: list[str] = []
    with ThreadedDispatcher():
        wait_until(lambda: task_progress(task["id"])["sent"] >= 2, message="first sends")
        paused = api.post(f"/api/tasks/{task['id']}/pause")
        assert paused.status_code == 200 and paused.data["status"] == "paused", paused.data
        resumed = api.post(f"/api/tasks/{task['id']}/resume").data
        assert resumed["status"] == "sending"

        def finished() -> bool:
            seen.append(api.get(f"/api/tasks/{task['id']}/").json()["status"])
            return seen[-1] == "completed"

        wait_until(finished, timeout=30, message="the task to complete")
    assert "queued" not in seen, seen


# --- dead-letter queue ----------------------------------------------------------------------


@pytest.fixture
def dead(api, other_api, tag, other_tag):
    """Three dead letters of ``user`` (two smtp_451, one transient), one of ``other_user``."""
    mine = queued_task(api, tag)
    theirs = queued_task(other_api, other_tag)
    entries = make_dead(mine["id"], error_types=["smtp_451", "smtp_451", "transient"])
    (their_entry,) = make_dead(theirs["id"], error_types=["smtp_451"])
    return {"task": mine["id"], "mine": entries, "other_task": theirs["id"], "theirs": their_entry}


def test_dlq_lists_own_entries_newest_first(api, dead):
    response = api.get("/api/dlq")
    assert response.status_code == 200
    ids = [e["id"] for e in response.data["results"]]
    assert ids == sorted((e.pk for e in dead["mine"]), reverse=True)
    entry = response.data["results"][-1]
    subtask = dead["mine"][0].subtask
    assert (entry["to_email"], entry["message_id"]) == (subtask.to_email, subtask.message_id)
    assert entry["error_type"] == "smtp_451" and len(entry["history"]) == 6


def test_dlq_filters_by_task_error_type_and_status(api, dead):
    services.dead_letter_reprocess(dead_letter_id=dead["mine"][2].pk)

    def ids(**params) -> list[int]:
        response = api.get("/api/dlq", params)
        assert response.status_code == 200
        return sorted(e["id"] for e in response.data["results"])

    assert ids(task=dead["task"]) == sorted(e.pk for e in dead["mine"])
    assert ids(task=dead["other_task"]) == []
    assert ids(error_type="smtp_451") == [dead["mine"][0].pk, dead["mine"][1].pk]
    assert ids(status="reprocessing") == [dead["mine"][2].pk]
    bad = api.get("/api/dlq", {"status": "gone"})
    assert bad.status_code == 400 and "status" in bad.data["errors"]


def test_dlq_is_keyset_paginated(api, dead):
    first = api.get("/api/dlq", {"page_size": 2})
    assert len(first.data["results"]) == 2 and first.data["next"]
    second = api.get(first.data["next"])
    assert len(second.data["results"]) == 1 and second.data["next"] is None


def test_staff_see_every_owners_dead_letters(staff_api, dead):
    response = staff_api.get("/api/dlq")
    assert len(response.data["results"]) == 4
    only_theirs = staff_api.get("/api/dlq", {"owner": dead["theirs"].owner_id})
    assert [e["id"] for e in only_theirs.data["results"]] == [dead["theirs"].pk]


def test_dlq_stats_count_own_entries_and_staff_count_all(api, staff_api, dead):
    services.dead_letter_reprocess(dead_letter_id=dead["mine"][2].pk)

    mine = api.get("/api/dlq/stats")
    assert mine.status_code == 200
    assert mine.data == {
        "total": 3,
        "by_status": {"pending": 2, "reprocessing": 1, "resolved": 0, "expired": 0},
        "by_error_type": {"smtp_451": 2, "transient": 1},
    }
    assert staff_api.get("/api/dlq/stats").data["total"] == 4
    theirs = staff_api.get("/api/dlq/stats", {"owner": dead["theirs"].owner_id})
    assert theirs.data["by_error_type"] == {"smtp_451": 1}
    bad = staff_api.get("/api/dlq/stats", {"owner": "me"})
    assert bad.status_code == 400 and "owner" in bad.data["errors"]


def test_reprocess_one_sends_it_again(api, dead):
    entry = dead["mine"][0]
    response = api.post(f"/api/dlq/{entry.pk}/reprocess")
    assert response.status_code == 200
    assert (response.data["status"], response.data["reprocess_count"]) == ("reprocessing", 1)
    subtask = SubTask.objects.get(pk=entry.subtask_id)
    assert (subtask.status, subtask.attempts) == ("pending", 0)
    assert Task.objects.get(pk=dead["task"]).status in ("queued", "sending")

    again = api.post(f"/api/dlq/{entry.pk}/reprocess")
    assert again.status_code == 400
    assert "reprocessing" in again.data["errors"]["status"][0]


def test_reprocess_of_another_users_entry_is_404(api, dead):
    response = api.post(f"/api/dlq/{dead['theirs'].pk}/reprocess")
    assert response.status_code == 404
    assert DeadLetter.objects.get(pk=dead["theirs"].pk).status == "pending"


def test_staff_may_reprocess_any_entry(staff_api, dead):
    response = staff_api.post(f"/api/dlq/{dead['theirs'].pk}/reprocess")
    assert response.status_code == 200 and response.data["status"] == "reprocessing"


def test_reprocess_of_a_cancelled_tasks_entry_is_a_400(api, dead):
    services.task_cancel(task=dead["task"])
    response = api.post(f"/api/dlq/{dead['mine'][0].pk}/reprocess")
    assert response.status_code == 400
    assert "cancelled" in response.data["errors"]["task"][0]


def test_reprocess_all_by_task_and_error_type(api, dead):
    response = api.post(f"/api/dlq/reprocess-all?task={dead['task']}&error_type=smtp_451")
    assert (response.status_code, response.data) == (200, {"reprocessed": 2})
    assert api.post("/api/dlq/reprocess-all").data == {"reprocessed": 1}
    assert DeadLetter.objects.get(pk=dead["theirs"].pk).status == "pending"
    assert not SubTask.objects.filter(task_id=dead["task"], status="dead").exists()


def test_reprocess_all_refuses_another_users_task_and_a_bad_task(api, dead):
    assert api.post(f"/api/dlq/reprocess-all?task={dead['other_task']}").status_code == 404
    bad = api.post("/api/dlq/reprocess-all?task=abc")
    assert bad.status_code == 400 and "task" in bad.data["errors"]
    assert DeadLetter.objects.filter(status="pending").count() == 4


def test_staff_reprocess_all_of_one_owner(staff_api, dead):
    owner = dead["theirs"].owner_id
    response = staff_api.post(f"/api/dlq/reprocess-all?owner={owner}")
    assert response.data == {"reprocessed": 1}
    assert DeadLetter.objects.filter(status="pending").count() == 3


# --- schema -------------------------------------------------------------------------------------


def test_the_schema_renders_every_dispatch_endpoint_without_warnings(api):
    GENERATOR_STATS.reset()
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/api/tasks/",
        "/api/tasks/{id}/",
        "/api/tasks/{id}/queue",
        "/api/tasks/{id}/subtasks/",
        "/api/tasks/{id}/requeue-unknown",
        "/api/dlq",
        "/api/dlq/stats",
        "/api/dlq/{id}/reprocess",
        "/api/dlq/reprocess-all",
    ):
        assert path in paths
    dispatch_warnings = [
        message
        for message in (*GENERATOR_STATS._warn_cache, *GENERATOR_STATS._error_cache)
        if "dispatch" in message or "status" in message
    ]
    assert dispatch_warnings == []


# --- scoping and query counts -------------------------------------------------------------


def test_staff_do_not_see_other_users_tasks_through_the_api(staff_api, api, tag):
    task = create_task(api, tag)
    assert staff_api.get(f"/api/tasks/{task['id']}/").status_code == 404
    assert staff_api.get("/api/tasks/").data["results"] == []


def test_list_pages_cost_a_fixed_number_of_queries(api, tag, dead, django_assert_num_queries):
    # token, task, one page of subtasks
    with django_assert_num_queries(3):
        assert len(api.get(f"/api/tasks/{dead['task']}/subtasks/").data["results"]) == 5
    # token, whether the caller is an operator, one page of dead letters (joined to
    # their subtasks)
    with django_assert_num_queries(3):
        assert len(api.get("/api/dlq").data["results"]) == 3
    # token, the task (with its id lists and its progress)
    with django_assert_num_queries(2):
        detail = api.get(f"/api/tasks/{dead['task']}/").json()
    assert detail["include_tags"] == [tag.pk] and detail["progress"]["total"] == 5
    # token, count, the page (with its id lists), the progress of the page
    with django_assert_num_queries(4):
        rows = api.get("/api/tasks/").data["results"]
    assert len(rows) == 1 and rows[0]["progress"]["total"] == 5

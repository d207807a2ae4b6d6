"""Helpers of the dispatch tests: run dispatchers, wait for outcomes, read sinks."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from django.db import connections
from django.db.models import F
from django.utils import timezone

from apps.contacts.models import Tag
from apps.core.database import child_env
from apps.dispatch import services
from apps.dispatch.engine.loop import Dispatcher
from apps.dispatch.models import SendChunk, SubTask, Task
from apps.dispatch.selectors import task_progress

ROOT = Path(__file__).resolve().parents[3]


def chunk_in_progress(subtasks, *, position: int, expired: bool = True) -> SendChunk:
    """What a dispatcher leaves behind mid-chunk: ``subtasks`` claimed (``allocated``
    under a fresh token) and a chunk row whose position is ``position`` (-1: nothing
    started), its lease ``expired`` (the dispatcher is gone) or not."""
    lease = timezone.now() + timedelta(seconds=-5 if expired else 60)
    ids = [s.pk for s in subtasks]
    SubTask.objects.filter(pk__in=ids).update(
        status="allocated", attempt_token=F("attempt_token") + 1, lease_expires_at=lease
    )
    rows = {s.pk: s for s in SubTask.objects.filter(pk__in=ids)}
    return SendChunk.objects.create(
        service_id=0,
        subtask_ids=ids,
        tokens=[rows[pk].attempt_token for pk in ids],
        task_ids=sorted({s.task_id for s in rows.values()}),
        position=position,
        lease_expires_at=lease,
    )


def queue_task(owner, *, tag: str = "list", **extra) -> Task:
    fields = {
        "name": "Newsletter",
        "subject": "Hello {{ contact.first_name }}",
        "body_text": "Hi {{ contact.first_name }} from {{ contact.attributes.city }}",
        "body_html": "<p>Hi {{ contact.first_name }}</p>",
        "include_tags": [Tag.objects.get(owner=owner, name=tag).pk],
    }
    fields.update(extra)
    task = services.task_create(owner=owner, **fields)
    return services.task_queue(task=task)


class ThreadedDispatcher:
    """A dispatcher loop in a thread (its own database connections)."""

    def __init__(self, **kwargs) -> None:
        self.dispatcher = None
        self.kwargs = {"use_slot": False, **kwargs}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.dispatcher = Dispatcher(**self.kwargs)
            self.dispatcher.run()
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc
        finally:
            connections.close_all()

    def start(self) -> ThreadedDispatcher:
        self.thread.start()
        return self

    def stop(self) -> None:
        deadline = time.monotonic() + 5
        while self.dispatcher is None and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.dispatcher is not None:
            self.dispatcher.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "dispatcher did not stop"
        if self.error:
            raise self.error

    def __enter__(self) -> ThreadedDispatcher:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str = "condition",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}")


def wait_done(task: Task, *, timeout: float = 30.0, check: Callable | None = None) -> dict:
    """Wait until the task has nothing pending/allocated/sending; return its progress.
    ``check(progress)`` runs on every sample (conservation checks)."""
    result: dict = {}

    def done() -> bool:
        progress = task_progress(task)
        if check:
            check(progress)
        result.update(progress)
        return progress["pending"] + progress["allocated"] + progress["sending"] == 0

    wait_until(done, timeout=timeout, message=f"task {task.pk} to finish")
    return result


def spawn_dispatcher(*args: str, **popen) -> subprocess.Popen:
    """``manage.py dispatch`` as a real subprocess against the test database (``popen``:
    more arguments of ``Popen``). Its stderr goes to a file (:func:`stderr_of`), not a
    pipe: a dispatcher that logs more than a pipe holds while nobody reads it (a test
    body waiting for outcomes) would block in its next log line, whatever thread it is."""
    env = child_env(DEBUG="1", LOG_LEVEL="WARNING")
    log = tempfile.NamedTemporaryFile(mode="w", prefix="edm-dispatch-", suffix=".log")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "dispatch", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        **popen,
    )
    process.log = log  # the file lives as long as the process object
    return process


def stderr_of(process: subprocess.Popen) -> str:
    """What a process of :func:`spawn_dispatcher` wrote to its stderr so far, read
    through a file handle of its own: the process writes at its own offset, which a read
    through the shared handle would move."""
    return Path(process.log.name).read_text(errors="replace")


def spawn_qcluster(**env_overrides: str) -> subprocess.Popen:
    """``manage.py qcluster`` (2 workers) against the test database, in its own session
    so that a test can signal its whole process group, workers included
    (``env_overrides``: more of its environment, e.g. another ``DATABASE_URL``)."""
    env = child_env(**{"DEBUG": "1", "LOG_LEVEL": "WARNING", "EDM_Q_WORKERS": "2", **env_overrides})
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "qcluster"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

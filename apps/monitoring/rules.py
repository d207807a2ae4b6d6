"""The metrics alert rules can watch, read once per evaluation round.

Each metric yields :class:`Observation` s — one per subject it concerns (a task, a
service, or ``system``); a subject that yields nothing does not meet any condition, so
its open alert resolves. Everything is read through :class:`Snapshot`, which calls each
selector of the dispatch app at most once per round (a few statements on small tables
and index ranges: a round costs milliseconds with 1,000,000 subtasks stored).

The seeded rules (migration ``0003_seed_alert_rules``) use these metrics:

=========================  =================================================  ==========
metric                     value                                              seeded
=========================  =================================================  ==========
``task_wait_seconds``      per task queued and not yet served: seconds since  > 300 s W,
                           it entered the queue (or its scheduled time)       > 600 s C,
                                                                              > 1800 s E
``dead_letters_entered``   dead letters that entered the queue (again) in     > 0 W
                           the last ``alerts.event_window``
``service_auto_disabled``  per service the dispatcher disabled after          ≥ 1 C
                           consecutive faults: 1
``dispatcher_heartbeat_age``  seconds since the newest dispatcher heartbeat   > 60 s C
                           (when ``queue.dispatchers`` > 0)
``backlog_growing_seconds``  for how long the backlog has grown at every      ≥ 600 s W
                           sample
``task_failure_rate``      per task (live, or finished within the event       > 5 % W
                           window) with ≥ 20 outcomes: % failed or dead
=========================  =================================================  ==========

and ``queue_oldest_pending_seconds``, ``dlq_pending``, ``services_ready`` and
``dispatchers_live`` are there for rules of one's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from django.utils import timezone

from apps.config.selectors import config_get
from apps.dispatch import selectors as dispatch
from apps.monitoring.models import Alert, AlertCondition, AlertRule, MonitorLease, SystemSample
from apps.monitoring.selectors import Reads, querysets_fetch
from apps.services.selectors import services_disabled, services_sendable_count

# A task's failure rate means something from this many outcomes on.
MIN_OUTCOMES = 20
# The dispatcher's reason when it disables a service (``engine/outcomes``).
AUTO_DISABLED_MARK = "consecutive faults"
SYSTEM = "system"


@dataclass(frozen=True)
class Observation:
    subject: str
    value: float
    label: str
    owner_id: int | None = None


class Snapshot(Reads):
    """What one round reads, each part at most once (the live tasks, and those finished
    within ``alerts.event_window``)."""

    def __init__(self, now: datetime | None = None) -> None:
        super().__init__(owner_id=None)
        self.now = now or timezone.now()
        self.event_window = float(config_get("alerts.event_window"))

    @cached_property
    def tasks(self) -> list[dict]:
        return dispatch.tasks_live(finished_within=self.event_window)

    @cached_property
    def dead_letters(self) -> dict:
        return dispatch.dead_letters_overview(since_seconds=self.event_window)

    @cached_property
    def state(self) -> dict[str, list]:
        """Monitoring's own rows a round reads, in one round trip: the enabled
        ``rules``, their ``conditions``, the ``open_alerts`` (their rule attached when it
        is enabled), the monitor ``lease`` and the ``samples`` of the last 15 minutes,
        newest first."""
        since = self.now - timezone.timedelta(seconds=900)
        state = querysets_fetch(
            {
                "rules": AlertRule.objects.filter(enabled=True),
                "conditions": AlertCondition.objects.filter(rule__enabled=True),
                "open_alerts": Alert.objects.exclude(status=Alert.Status.RESOLVED),
                "lease": MonitorLease.objects.filter(name="monitor"),
                "samples": SystemSample.objects.filter(taken_at__gte=since).order_by("-taken_at"),
            }
        )
        rules = {rule.pk: rule for rule in state["rules"]}
        for alert in state["open_alerts"]:
            if alert.rule_id in rules:
                alert.rule = rules[alert.rule_id]
        return state

    @cached_property
    def lease(self):
        return self.state["lease"][0] if self.state["lease"] else None

    @cached_property
    def recent_samples(self) -> list:
        """The samples of the last 15 minutes, newest first."""
        return self.state["samples"]

    def last_heartbeat(self) -> datetime | None:
        """The newest dispatcher heartbeat seen: a slot's, or the one the monitor loop
        recorded before the slot's row went away."""
        seen = [slot["heartbeat_at"] for slot in self.slots]
        if self.lease is not None and self.lease.last_dispatcher_heartbeat_at:
            seen.append(self.lease.last_dispatcher_heartbeat_at)
        return max(seen) if seen else None


def _task_label(task: dict) -> str:
    return f"task {task['id']} {task['name']!r} of {task['owner']}"


def task_wait_seconds(snap: Snapshot) -> list[Observation]:
    return [
        Observation(
            f"task:{task['id']}",
            (snap.now - task["waiting_since"]).total_seconds(),
            _task_label(task),
            task["owner_id"],
        )
        for task in snap.tasks
        if task["waiting_since"] is not None
    ]


def task_failure_rate(snap: Snapshot) -> list[Observation]:
    observations = []
    for task in snap.tasks:
        counts = snap.progress.get(task["id"], {})
        bad = counts.get("failed", 0) + counts.get("dead", 0)
        outcomes = bad + counts.get("sent", 0)
        if outcomes >= MIN_OUTCOMES:
            observations.append(
                Observation(
                    f"task:{task['id']}",
                    100.0 * bad / outcomes,
                    _task_label(task),
                    task["owner_id"],
                )
            )
    return observations


def dead_letters_entered(snap: Snapshot) -> list[Observation]:
    return [Observation(SYSTEM, snap.dead_letters["entered"], "dead-letter queue")]


def dlq_pending(snap: Snapshot) -> list[Observation]:
    return [Observation(SYSTEM, snap.dead_letters["pending"], "dead-letter queue")]


def service_auto_disabled(snap: Snapshot | None, *, services=None) -> list[Observation]:
    """``services``: service states (``dispatch.service_states``) already read."""
    if services is not None:
        disabled = [s for s in services if s["state"] == "disabled"]
    else:
        disabled = services_disabled()
    return [
        Observation(f"service:{s['id']}", 1.0, f"service {s['name']!r} ({s['disabled_reason']})")
        for s in disabled
        if AUTO_DISABLED_MARK in s["disabled_reason"]
    ]


def services_ready(snap: Snapshot) -> list[Observation]:
    return [Observation(SYSTEM, services_sendable_count(), "email services")]


def dispatcher_heartbeat_age(snap: Snapshot) -> list[Observation]:
    if int(config_get("queue.dispatchers")) == 0:
        return []
    last = snap.last_heartbeat()
    if last is None:
        # Never seen one: count from the moment the monitor loop started watching.
        started = snap.lease.started_at if snap.lease is not None else None
        if started is None:
            return []
        last = started
    return [Observation(SYSTEM, max(0.0, (snap.now - last).total_seconds()), "dispatchers")]


def dispatchers_live(snap: Snapshot) -> list[Observation]:
    return [Observation(SYSTEM, sum(1 for s in snap.slots if s["live"]), "dispatchers")]


def backlog_growing_seconds(snap: Snapshot) -> list[Observation]:
    samples = snap.recent_samples
    start = 0
    while start + 1 < len(samples) and samples[start].backlog > samples[start + 1].backlog:
        start += 1
    seconds = (samples[0].taken_at - samples[start].taken_at).total_seconds() if samples else 0.0
    return [Observation(SYSTEM, seconds, "backlog")]


def queue_oldest_pending_seconds(snap: Snapshot) -> list[Observation]:
    ready = [t["ready_since"] for t in snap.times.values() if t["ready_since"]]
    age = (snap.now - min(ready)).total_seconds() if ready else 0.0
    return [Observation(SYSTEM, max(0.0, age), "queue")]


@dataclass(frozen=True)
class Metric:
    name: str
    description: str
    read: Callable[[Snapshot], list[Observation]]


_DESCRIPTIONS = {
    task_wait_seconds: "Seconds a queued task has waited for its first send.",
    task_failure_rate: "Percent of a task's outcomes that failed or died.",
    dead_letters_entered: "Dead letters entered in the event window.",
    dlq_pending: "Dead letters waiting for an operator.",
    service_auto_disabled: "1 per service disabled after consecutive faults.",
    services_ready: "Enabled services with quota left (ready or sending).",
    dispatcher_heartbeat_age: "Seconds since the newest dispatcher heartbeat.",
    dispatchers_live: "Dispatcher loops holding a live slot.",
    backlog_growing_seconds: "How long the backlog has grown at every sample.",
    queue_oldest_pending_seconds: "Age of the oldest ready message.",
}
METRICS: dict[str, Metric] = {
    read.__name__: Metric(read.__name__, description, read)
    for read, description in _DESCRIPTIONS.items()
}

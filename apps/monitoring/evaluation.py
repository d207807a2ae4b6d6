"""One round of alert evaluation: :func:`rules_evaluate`.

For every enabled rule, its metric's observations (``rules.METRICS``, read once per
round through a :class:`~apps.monitoring.rules.Snapshot`) are compared with the rule's
condition:

* a condition that starts to hold is remembered (:class:`AlertCondition`, since when);
  it becomes *active* once it has held ``for_seconds``; one that stops holding is
  forgotten;
* rules on the same metric form a ladder: per (metric, subject), the active rule of the
  highest level decides. No open alert → one **fires**; an open alert of a lower level
  **escalates** (acknowledged or not, it is firing again); an open alert of the same or
  a higher level stays as it is (levels never step down within an episode) and, while
  firing and unacknowledged, is **reminded** every ``alerts.repeat_interval``;
* an open alert none of whose metric's rules holds any more is **resolved**;
* a metric that could not be read this round changes nothing of its alerts.

A round reads without locks — monitoring's own rows in one round trip
(``Snapshot.state``); what it writes — conditions, alerts, the notifications they queue —
commits in one transaction, opened only when something changed (a quiet round writes
nothing; one in which only open alerts' values moved writes them in one statement).
Deliveries happen elsewhere (``notify``), so a slow channel never delays a round.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import IntegrityError, connection, transaction

from apps.config.selectors import config_get
from apps.core.audit import event_append
from apps.monitoring.models import LEVEL_RANK, Alert, AlertCondition, AlertRule, Notification
from apps.monitoring.notify import notifications_queue
from apps.monitoring.rules import METRICS, Observation, Snapshot

logger = logging.getLogger("edm.monitoring")


@dataclass
class RoundReport:
    rules: int = 0
    fired: list[int] = field(default_factory=list)
    escalated: list[int] = field(default_factory=list)
    reminded: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "rules": self.rules,
            "fired": len(self.fired),
            "escalated": len(self.escalated),
            "reminded": len(self.reminded),
            "resolved": len(self.resolved),
            "errors": self.errors,
        }


def _observe(rules: list[AlertRule], snap: Snapshot, report: RoundReport):
    """Observations per metric; a metric that fails is left out (and reported)."""
    observed: dict[str, dict[str, Observation]] = {}
    for metric in sorted({rule.metric for rule in rules}):
        definition = METRICS.get(metric)
        if definition is None:
            report.errors[metric] = "unknown metric"
            continue
        try:
            observed[metric] = {o.subject: o for o in definition.read(snap)}
        except Exception as exc:
            logger.exception("alert metric %s could not be read", metric)
            report.errors[metric] = f"{type(exc).__name__}: {exc}"
    return observed


def rules_evaluate(*, snapshot: Snapshot | None = None) -> RoundReport:
    """Evaluate every enabled rule once (see the module docstring); returns what
    happened. The round reads without locks and writes — only when something changed —
    in one transaction; the open-alert constraint keeps one episode per (metric, subject)
    even if two rounds ran at once (the loser's firing is skipped)."""
    snap = snapshot or Snapshot()
    now = snap.now
    report = RoundReport()
    rules = snap.state["rules"]
    report.rules = len(rules)
    observed = _observe(rules, snap, report)
    conditions = {(c.rule_id, c.subject): c for c in snap.state["conditions"]}
    open_alerts = {(a.metric, a.subject): a for a in snap.state["open_alerts"]}

    # (metric, subject) → [(rule, observation)] of the rules that hold / are active.
    holding: dict[tuple[str, str], list] = defaultdict(list)
    active: dict[tuple[str, str], list] = defaultdict(list)
    keep: set[tuple[int, str]] = set()
    new_conditions = []
    for rule in rules:
        if rule.metric not in observed:
            # Unknown this round: keep its conditions as they are.
            keep.update(key for key in conditions if key[0] == rule.pk)
            continue
        for subject, observation in observed[rule.metric].items():
            if not rule.holds(observation.value):
                continue
            key = (rule.pk, subject)
            keep.add(key)
            condition = conditions.get(key)
            if condition is None:
                new_conditions.append(
                    AlertCondition(rule=rule, subject=subject, since=now, value=observation.value)
                )
            since = condition.since if condition is not None else now
            holding[(rule.metric, subject)].append((rule, observation))
            if (now - since).total_seconds() >= rule.for_seconds:
                active[(rule.metric, subject)].append((rule, observation))
    gone = [c.pk for key, c in conditions.items() if key not in keep]

    fire, escalate, remind, values = [], [], [], []
    repeat = float(config_get("alerts.repeat_interval"))
    for key, candidates in active.items():
        rule, observation = max(candidates, key=lambda c: (LEVEL_RANK[c[0].level], c[0].threshold))
        alert = open_alerts.get(key)
        if alert is None:
            fire.append((rule, observation))
        elif LEVEL_RANK[rule.level] > LEVEL_RANK[alert.level]:
            escalate.append((alert, rule, observation))
        else:
            if alert.value != observation.value:
                values.append((alert, observation.value))
            due = alert.last_notified_at is None or (
                now - alert.last_notified_at >= timedelta(seconds=repeat)
            )
            if repeat > 0 and alert.status == Alert.Status.FIRING and due:
                remind.append(alert)
    watched = {rule.metric for rule in rules}
    resolve = [
        alert
        for key, alert in open_alerts.items()
        if key not in holding and not (key[0] in watched and key[0] not in observed)
    ]
    if not (new_conditions or gone or fire or escalate or remind or resolve):
        # Nothing but the values of open alerts moved (their metrics keep changing, as a
        # wait grows): one statement, atomic by itself, needs no transaction.
        _values_update(values)
        return report

    notify_resolved = bool(config_get("alerts.notify_resolved"))
    with transaction.atomic():
        AlertCondition.objects.bulk_create(new_conditions, ignore_conflicts=True)
        AlertCondition.objects.filter(pk__in=gone).delete()
        for rule, observation in fire:
            try:
                with transaction.atomic():
                    alert = _fire(rule, observation, now)
            except IntegrityError:
                continue  # another round fired it meanwhile
            report.fired.append(alert.pk)
            notifications_queue(alert=alert, event=Notification.Event.FIRED, now=now)
        for alert, rule, observation in escalate:
            _escalate(alert, rule, observation, now)
            report.escalated.append(alert.pk)
            notifications_queue(alert=alert, event=Notification.Event.ESCALATED, now=now)
        _values_update(values)
        for alert in remind:
            report.reminded.append(alert.pk)
            notifications_queue(alert=alert, event=Notification.Event.REMINDER, now=now)
        for alert in resolve:
            resolved = Alert.objects.filter(pk=alert.pk).exclude(status=Alert.Status.RESOLVED)
            if not resolved.update(status=Alert.Status.RESOLVED, resolved_at=now):
                continue  # resolved meanwhile (by hand)
            alert.status, alert.resolved_at = Alert.Status.RESOLVED, now
            _alert_event("alert.resolved", alert)
            report.resolved.append(alert.pk)
            if notify_resolved:
                notifications_queue(alert=alert, event=Notification.Event.RESOLVED, now=now)
    if report.fired or report.escalated or report.resolved:
        logger.info("alert round: %s", report.as_dict())
    return report


def _values_update(values: list[tuple[Alert, float]]) -> None:
    """Open alerts' current values, in one statement."""
    if not values:
        return
    table = Alert._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} a SET value = v.value FROM (VALUES "
            + ", ".join(["(%s::bigint, %s::float8)"] * len(values))
            + ") v(id, value) WHERE a.id = v.id",
            [param for alert, value in values for param in (alert.pk, value)],
        )
    for alert, value in values:
        alert.value = value


def _alert_event(event_type: str, alert: Alert) -> None:
    event_append(
        event_type,
        owner=alert.owner_id,
        subject=alert,
        payload={
            "rule": alert.rule_name,
            "metric": alert.metric,
            "subject": alert.subject,
            "level": alert.level,
            "value": alert.value,
            "threshold": alert.threshold,
        },
    )


def _fire(rule: AlertRule, observation: Observation, now) -> Alert:
    alert = Alert.objects.create(
        rule=rule,
        rule_name=rule.name,
        metric=rule.metric,
        subject=observation.subject,
        subject_label=observation.label[:255],
        owner_id=observation.owner_id,
        level=rule.level,
        value=observation.value,
        threshold=rule.threshold,
        message=rule.description,
        fired_at=now,
    )
    _alert_event("alert.fired", alert)
    return alert


def _escalate(alert: Alert, rule: AlertRule, observation: Observation, now) -> None:
    alert.rule = rule
    alert.rule_name = rule.name
    alert.level = rule.level
    alert.threshold = rule.threshold
    alert.value = observation.value
    alert.message = rule.description
    alert.status = Alert.Status.FIRING
    alert.escalated_at = now
    alert.save(
        update_fields=[
            "rule",
            "rule_name",
            "level",
            "threshold",
            "value",
            "message",
            "status",
            "escalated_at",
        ]
    )
    _alert_event("alert.escalated", alert)

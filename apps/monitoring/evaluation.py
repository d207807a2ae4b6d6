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

Everything a round writes — conditions, alerts, the notifications they queue — commits
in one transaction; deliveries happen elsewhere (``notify``), so a slow channel never
delays a round.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import transaction

from apps.config.selectors import config_get
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
    happened. Safe to call from several processes: the open-alert constraint and the
    row locks taken here keep one episode per (metric, subject)."""
    snap = snapshot or Snapshot()
    now = snap.now
    report = RoundReport()
    rules = list(AlertRule.objects.filter(enabled=True).prefetch_related("channels"))
    report.rules = len(rules)
    observed = _observe(rules, snap, report)
    repeat = float(config_get("alerts.repeat_interval"))
    notify_resolved = bool(config_get("alerts.notify_resolved"))

    with transaction.atomic():
        conditions = {
            (c.rule_id, c.subject): c
            for c in AlertCondition.objects.select_for_update().filter(
                rule_id__in=[r.pk for r in rules]
            )
        }
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
                since = condition.since if condition is not None else now
                if condition is None:
                    new_conditions.append(
                        AlertCondition(
                            rule=rule, subject=subject, since=now, value=observation.value
                        )
                    )
                holding[(rule.metric, subject)].append((rule, observation))
                if (now - since).total_seconds() >= rule.for_seconds:
                    active[(rule.metric, subject)].append((rule, observation))
        AlertCondition.objects.bulk_create(new_conditions, ignore_conflicts=True)
        gone = [c.pk for key, c in conditions.items() if key not in keep]
        AlertCondition.objects.filter(pk__in=gone).delete()

        open_alerts = {
            (a.metric, a.subject): a
            for a in Alert.objects.select_for_update(of=("self",))
            .select_related("rule")
            .exclude(status=Alert.Status.RESOLVED)
        }
        for key, candidates in active.items():
            rule, observation = max(
                candidates, key=lambda c: (LEVEL_RANK[c[0].level], c[0].threshold)
            )
            alert = open_alerts.get(key)
            if alert is None:
                alert = _fire(rule, observation, now)
                report.fired.append(alert.pk)
                notifications_queue(alert=alert, event=Notification.Event.FIRED, now=now)
            elif LEVEL_RANK[rule.level] > LEVEL_RANK[alert.level]:
                _escalate(alert, rule, observation, now)
                report.escalated.append(alert.pk)
                notifications_queue(alert=alert, event=Notification.Event.ESCALATED, now=now)
            else:
                alert.value = observation.value
                alert.save(update_fields=["value"])
                due = alert.last_notified_at is None or (
                    now - alert.last_notified_at >= timedelta(seconds=repeat)
                )
                if repeat > 0 and alert.status == Alert.Status.FIRING and due:
                    report.reminded.append(alert.pk)
                    notifications_queue(alert=alert, event=Notification.Event.REMINDER, now=now)
        watched = {rule.metric for rule in rules}
        for key, alert in open_alerts.items():
            metric = key[0]
            unknown_this_round = metric in watched and metric not in observed
            if key in holding or unknown_this_round:
                continue
            alert.status = Alert.Status.RESOLVED
            alert.resolved_at = now
            alert.save(update_fields=["status", "resolved_at"])
            report.resolved.append(alert.pk)
            if notify_resolved:
                notifications_queue(alert=alert, event=Notification.Event.RESOLVED, now=now)
    if report.fired or report.escalated or report.resolved:
        logger.info("alert round: %s", report.as_dict())
    return report


def _fire(rule: AlertRule, observation: Observation, now) -> Alert:
    return Alert.objects.create(
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

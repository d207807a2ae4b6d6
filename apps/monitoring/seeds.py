"""The alert rules EDM starts with (migration ``0003_seed_alert_rules`` creates them;
operators change or disable them freely). Each: seed key, name, metric, comparison,
threshold, for_seconds, level, description."""

from __future__ import annotations

SEEDED_RULES = [
    (
        "task-wait-warning",
        "Task waiting over 5 minutes",
        "task_wait_seconds",
        "gt",
        300,
        0,
        "warning",
        "A queued task has had no first send for 5 minutes.",
    ),
    (
        "task-wait-critical",
        "Task waiting over 10 minutes",
        "task_wait_seconds",
        "gt",
        600,
        0,
        "critical",
        "A queued task has had no first send for 10 minutes.",
    ),
    (
        "task-wait-emergency",
        "Task waiting over 30 minutes",
        "task_wait_seconds",
        "gt",
        1800,
        0,
        "emergency",
        "A queued task has had no first send for 30 minutes.",
    ),
    (
        "dead-letter-entered",
        "Dead letter entered",
        "dead_letters_entered",
        "gt",
        0,
        0,
        "warning",
        "Messages ran out of attempts and wait in the dead-letter queue.",
    ),
    (
        "service-auto-disabled",
        "Email service disabled after faults",
        "service_auto_disabled",
        "gte",
        1,
        0,
        "critical",
        "The dispatcher disabled a service after consecutive faults; enable it once fixed.",
    ),
    (
        "dispatcher-heartbeat",
        "No dispatcher heartbeat for 60 s",
        "dispatcher_heartbeat_age",
        "gt",
        60,
        0,
        "critical",
        "No dispatcher loop is running: nothing is sent.",
    ),
    (
        "backlog-growing",
        "Backlog growing for 10 minutes",
        "backlog_growing_seconds",
        "gte",
        600,
        0,
        "warning",
        "More messages are queued than sent, sample after sample.",
    ),
    (
        "task-failure-rate",
        "Task failure rate above 5 %",
        "task_failure_rate",
        "gt",
        5,
        0,
        "warning",
        "More than 5 % of a task's messages failed or died.",
    ),
]


def rules_seed(AlertRule) -> int:
    """Create the seeded rules that are missing (``AlertRule``: the model, or a
    migration's historical one). Returns how many were created."""
    created = 0
    for key, name, metric, comparison, threshold, for_seconds, level, text in SEEDED_RULES:
        _, new = AlertRule.objects.get_or_create(
            seed=key,
            defaults={
                "name": name,
                "metric": metric,
                "comparison": comparison,
                "threshold": threshold,
                "for_seconds": for_seconds,
                "level": level,
                "description": text,
            },
        )
        created += new
    return created

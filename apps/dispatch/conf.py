"""The configuration the dispatcher reads, as one snapshot.

Values come from :func:`apps.config.selectors.config_get` and are re-read by the loop
about once a second, so a change applies without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from apps.config.selectors import config_get


@dataclass(frozen=True)
class DispatchSettings:
    batch_size: int
    dispatchers: int
    concurrency: int
    max_connections: int
    sender: str
    lease_seconds: float
    backoff_strategy: str
    backoff_initial: float
    backoff_multiplier: float
    backoff_max_delay: float
    backoff_jitter: float
    backoff_custom_delays: tuple[float, ...]
    max_retries: int
    dlq_max_age: float
    dlq_immediate_error_types: frozenset[str]
    subtask_timeout: float
    resend_ambiguous: bool
    service_failure_limit: int
    service_cooldown: float
    throttle_delay: float

    @classmethod
    def load(cls) -> DispatchSettings:
        custom = config_get("backoff.custom_delays") or []
        immediate = config_get("dlq.immediate_error_types") or []
        return cls(
            batch_size=int(config_get("queue.batch_size")),
            dispatchers=int(config_get("queue.dispatchers")),
            concurrency=int(config_get("queue.concurrency")),
            max_connections=int(config_get("queue.max_connections")),
            sender=str(config_get("queue.sender")),
            lease_seconds=float(config_get("queue.lease_seconds")),
            backoff_strategy=str(config_get("backoff.strategy")),
            backoff_initial=float(config_get("backoff.initial")),
            backoff_multiplier=float(config_get("backoff.multiplier")),
            backoff_max_delay=float(config_get("backoff.max_delay")),
            backoff_jitter=float(config_get("backoff.jitter")),
            backoff_custom_delays=tuple(float(value) for value in custom),
            max_retries=int(config_get("backoff.max_retries")),
            dlq_max_age=float(config_get("dlq.max_age")),
            dlq_immediate_error_types=frozenset(str(value) for value in immediate),
            subtask_timeout=float(config_get("recovery.subtask_timeout")),
            resend_ambiguous=bool(config_get("recovery.resend_ambiguous")),
            service_failure_limit=int(config_get("recovery.service_failure_limit")),
            service_cooldown=float(config_get("recovery.service_cooldown")),
            throttle_delay=float(config_get("backoff.throttle_delay")),
        )

    @property
    def smtp_timeout(self) -> float:
        """Socket timeout of a send: well inside the lease, so a slow server cannot keep a
        message on the wire past its lease (it would then be reported ``unknown``)."""
        return max(1.0, min(self.subtask_timeout, self.lease_seconds / 3))

"""The dispatcher's writes on email services, owned here: one statement per chunk.

The dispatcher records what a chunk did to its service — next slot, quota given back,
counters, moving averages, failure streak — in the same statement as the chunk's
outcome (:func:`chunk_outcome_cte`, a data-modifying CTE it includes), gives back a
reservation that never sent (:func:`service_give_back`), and disables a service that
keeps failing through :func:`service_disable_failing`, which is audited like an
operator's disable (history row, ``service.disabled`` event). These counters are
runtime state, written with ``UPDATE`` and not history (see ``services.py``).
"""

from __future__ import annotations

import logging

from django.db import connection

from apps.services.services import service_disable

logger = logging.getLogger(__name__)


def chunk_outcome_cte(*, name: str = "service") -> str:
    """A CTE ``<name> AS (UPDATE services_emailservice …)`` recording one chunk's outcome
    on its service, returning ``consecutive_failures, is_enabled``. Named parameters:
    ``next_in`` (seconds to the next slot, or NULL to keep the reserved one unless
    ``old_next`` is earlier), ``old_next``, ``unused`` (quota to give back), ``sent``,
    ``failed``, ``ratio`` / ``latency`` (the chunk's success ratio and mean latency, NULL
    when unknown), ``alpha`` (weight of the chunk in the moving averages), ``is_fault``
    (a service fault: the failure streak grows) and ``service`` (its id)."""
    return f"""{name} AS (
    UPDATE services_emailservice SET
        next_available_at = CASE WHEN %(next_in)s::float8 IS NULL
                                 THEN LEAST(next_available_at, %(old_next)s)
                                 ELSE clock_timestamp() + make_interval(secs => %(next_in)s)
                            END,
        used_quota = GREATEST(0, used_quota - %(unused)s),
        total_sent = total_sent + %(sent)s,
        total_failed = total_failed + %(failed)s,
        last_sent_at = CASE WHEN %(sent)s > 0 THEN now() ELSE last_sent_at END,
        success_rate = CASE WHEN %(ratio)s::float IS NULL THEN success_rate
                            ELSE success_rate * (1 - %(alpha)s) + %(alpha)s * %(ratio)s END,
        avg_response_time = CASE WHEN %(latency)s::float IS NULL THEN avg_response_time
                                 WHEN avg_response_time = 0 THEN %(latency)s
                                 ELSE avg_response_time * (1 - %(alpha)s)
                                      + %(alpha)s * %(latency)s END,
        consecutive_failures = CASE WHEN %(is_fault)s THEN consecutive_failures + 1
                                    WHEN %(sent)s > 0 THEN 0
                                    ELSE consecutive_failures END
    WHERE id = %(service)s
    RETURNING consecutive_failures, is_enabled
)"""


def service_give_back(*, service_id: int, old_next, slots: int) -> None:
    """A reservation that sent nothing: the service's next slot as it was (unless it is
    earlier now) and its ``slots`` of quota refunded. One statement."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE services_emailservice SET "
            "next_available_at = LEAST(next_available_at, %s), "
            "used_quota = GREATEST(0, used_quota - %s) WHERE id = %s",
            [old_next, slots, service_id],
        )


def service_disable_failing(*, service_id: int, failures: int, last_error: str) -> bool:
    """Disable a service after ``failures`` service faults in a row (the system as the
    actor): the same audited path as an operator's disable — history row with the
    reason, ``service.disabled`` event — in one transaction. Returns False when it was
    disabled already."""
    reason = f"{failures} consecutive faults; last: {last_error}"[:255]
    disabled = service_disable(service_id=service_id, reason=reason, actor=None)
    if disabled:
        logger.warning("email service %s disabled: %s", service_id, reason)
    return disabled

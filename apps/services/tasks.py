"""django-q2 entry points of the services app."""

from __future__ import annotations

import logging

from apps.services.services import services_reset_daily_quotas

logger = logging.getLogger(__name__)

# Every 5 minutes rather than a cron at 00:00: q2 fires schedules up to ~30 s late and
# not at all while the cluster is down; the job is idempotent, so running it often makes
# a missed midnight harmless (and reads are date-aware anyway).
SCHEDULES = [
    {
        "name": "services.reset_daily_quotas",
        "func": "apps.services.tasks.reset_daily_quotas",
        "schedule_type": "I",
        "minutes": 5,
    },
]


def reset_daily_quotas() -> int:
    """Reset the quotas whose day is over; returns how many services were reset."""
    count = services_reset_daily_quotas()
    if count:
        logger.info("reset the daily quota of %d email service(s)", count)
    return count

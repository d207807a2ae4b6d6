"""Attempt histories (``SubTask.history``, ``DeadLetter.history``) as people read them.

The dispatcher stores each attempt's time as a Unix timestamp (``"at": 1796106974.24``:
cheap to write on the hot path). Readers show it as a moment: ISO 8601 in the API
(:func:`history_times`), the local time in the admin.
"""

from __future__ import annotations

import datetime as dt
from typing import Any


def _moment(value: Any) -> dt.datetime | Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    try:
        return dt.datetime.fromtimestamp(float(value), tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return value


def history_times(entries: Any, *, as_datetime: bool = False) -> Any:
    """A copy of ``entries`` whose ``at`` values are moments: ISO 8601 strings in UTC
    (``2026-11-30T08:36:14.240000+00:00``), or aware datetimes with ``as_datetime``.
    Anything that is not a list of entries is returned as it is."""
    if not isinstance(entries, list):
        return entries
    out = []
    for entry in entries:
        if isinstance(entry, dict) and "at" in entry:
            moment = _moment(entry["at"])
            if isinstance(moment, dt.datetime) and not as_datetime:
                moment = moment.isoformat()
            out.append({**entry, "at": moment})
        else:
            out.append(entry)
    return out

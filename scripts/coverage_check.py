#!/usr/bin/env python
"""Print line coverage per app from ``.coverage`` and enforce the project's floors.

Floors: every app together ≥ 85 %, ``apps/dispatch`` ≥ 90 %. Exit 1 when one is missed.
"""

from __future__ import annotations

import sys
from collections import defaultdict

import coverage

FLOORS = {"apps": 85.0, "apps/dispatch": 90.0}


def main() -> int:
    cov = coverage.Coverage()
    cov.load()
    data = cov.get_data()
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for filename in data.measured_files():
        relative = filename.split("/apps/", 1)
        if len(relative) != 2 or "/tests/" in filename or "/migrations/" in filename:
            continue
        _, statements, _, missing, _ = cov.analysis2(filename)
        if "/" not in relative[1]:
            continue  # apps/__init__.py
        app = "apps/" + relative[1].split("/", 1)[0]
        for key in ("apps", app):
            totals[key][0] += len(statements)
            totals[key][1] += len(statements) - len(missing)
    failed = False
    print("line coverage by app:")
    for key in sorted(totals):
        statements, covered = totals[key]
        percent = 100.0 * covered / statements if statements else 100.0
        floor = FLOORS.get(key)
        verdict = ""
        if floor is not None:
            verdict = "ok" if percent >= floor else f"BELOW {floor:.0f}%"
            failed |= percent < floor
        print(f"  {key:<20} {percent:5.1f}%  ({covered}/{statements}) {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

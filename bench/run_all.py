#!/usr/bin/env python
"""Run every benchmark (``bench/bench_*.py``) one after another and print their figures.

``make bench`` runs the record sizes; ``make bench-smoke`` (``--smoke``) small sizes that
finish in seconds. Each script is standalone: it migrates the database it is given
(``DATABASE_URL``), builds its own data with a fixed seed, prints its figures and writes
them as JSON under ``bench/results/``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import SKIPPED  # noqa: E402


def main() -> int:
    extra = sys.argv[1:]
    only = [a for a in extra if not a.startswith("-")]
    flags = [a for a in extra if a.startswith("-")]
    scripts = sorted(HERE.glob("bench_*.py"))
    if only:
        scripts = [s for s in scripts if any(name in s.stem for name in only)]
    failed = []
    for script in scripts:
        print(f"\n=== {script.name} {' '.join(flags)}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(script), *flags], cwd=HERE.parent)
        print(f"=== {script.name}: exit {code} in {time.monotonic() - started:.0f}s", flush=True)
        if code == SKIPPED:
            print(f"=== {script.name}: skipped (it says why above)", flush=True)
        elif code:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

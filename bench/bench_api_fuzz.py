#!/usr/bin/env python
"""The long outside test of the API (BENCHMARKS.md, "API"): schemathesis against gunicorn
on loopback, as a tenant and as an operator at once, about 10,000 generated requests each.

The same checks as ``tests/test_api_schema.py`` (no server error, every status and content
type documented, every body in its schema), with every phase (examples, coverage,
fuzzing, stateful) and many more examples per operation. Figures: the requests generated
and the failures found per token, and how long it took. Throttles are off for the run
(``EDM_THROTTLE_*=off``): a throttled answer is documented but tests nothing behind it.

    DEBUG=1 .venv/bin/python scripts/devdb.py -- .venv/bin/python bench/bench_api_fuzz.py

``--smoke``: a few examples per operation, fuzzing only (about a minute).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import report, setup_django  # noqa: E402


def _generated(output: str) -> int:
    match = re.search(r"(\d+) generated", output)
    return int(match.group(1)) if match else 0


def _failures(output: str) -> int:
    match = re.search(r"(\d+) unique failures", output)
    return int(match.group(1)) if match else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a short run")
    parser.add_argument(
        "--examples", type=int, default=100, help="examples per operation and phase"
    )
    args = parser.parse_args()
    setup_django()

    from bench_api import free_port, start_gunicorn
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from apps.core.services import tenant_create
    from tests.api_fuzz import finish, start_fuzz

    User = get_user_model()
    tenant = (
        User.objects.filter(username="fuzz-tenant").first()
        or tenant_create(username="fuzz-tenant", password="Fz-9pass-word-x")[0]
    )
    operator = User.objects.filter(username="fuzz-operator").first()
    if operator is None:
        operator = User.objects.create_superuser(
            "fuzz-operator", "operator@example.com", "Fz-9pass-word-y"
        )
    tokens = {
        who: Token.objects.get_or_create(user=user)[0].key
        for who, user in (("tenant", tenant), ("operator", operator))
    }
    examples = 5 if args.smoke else args.examples
    phases = "fuzzing" if args.smoke else "examples,coverage,fuzzing,stateful"
    port = free_port()
    gunicorn = start_gunicorn(
        port,
        4,
        EDM_THROTTLE_USER="off",
        EDM_THROTTLE_ADDRESS="off",
        EDM_THROTTLE_ANON="off",
    )
    started = time.monotonic()
    try:
        base = f"http://127.0.0.1:{port}"
        processes = {
            who: start_fuzz(base, token, examples=examples, phases=phases, workers=2)
            for who, token in tokens.items()
        }
        runs = [finish(who, p, timeout=4 * 3600) for who, p in processes.items()]
    finally:
        gunicorn.terminate()
        gunicorn.wait(timeout=30)
    elapsed = time.monotonic() - started
    figures: dict = {"examples_per_operation": examples, "phases": phases}
    for run in runs:
        figures[f"{run.who}_requests_generated"] = _generated(run.output)
        figures[f"{run.who}_failures"] = _failures(run.output)
        figures[f"{run.who}_exit"] = run.returncode
        if run.returncode:
            print(f"--- as the {run.who}\n{run.failures}\n{run.summary}")
    figures["requests_generated"] = sum(_generated(run.output) for run in runs)
    figures["seconds"] = round(elapsed)
    report("api_fuzz_smoke" if args.smoke else "api_fuzz", figures)
    return 0 if all(run.returncode == 0 for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# Exit status of a benchmark that cannot run on this machine (a tool is missing): it says
# why, and ``run_all.py`` reports it as skipped rather than failed.
SKIPPED = 3


def setup_django() -> None:
    """Configure Django for a standalone script and bring the schema up to date."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "edm.settings")
    os.environ.setdefault("DEBUG", "1")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def production_env(**overrides: str) -> dict[str, str]:
    """This process's environment with production settings for a process the benchmark
    starts (a dispatcher, a peer): ``DEBUG`` off — so Django keeps no query log and
    formats no statement for it — with a fresh ``SECRET_KEY`` and encryption key (the
    benchmark's services have no password to decrypt). The database is the same."""
    import secrets

    from cryptography.fernet import Fernet

    return {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "EDM_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "127.0.0.1",
        **overrides,
    }


def machine() -> dict:
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(name: str, figures: dict) -> None:
    """Print figures and store them in bench/results/<name>.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), "figures": figures}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    for key, value in figures.items():
        print(f"{name}: {key} = {value}")

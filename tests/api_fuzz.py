"""schemathesis against a live EDM server: what ``tests/test_api_schema.py`` and
``bench/bench_api_fuzz.py`` share.

The checks: ``not_a_server_error`` (no 5xx but the documented 503 of the system
health), ``status_code_conformance`` (every status answered is documented),
``response_schema_conformance`` and ``content_type_conformance`` (every body is what the
schema says, in the content type it says). Failures are reported with a ``curl`` line
that reproduces each.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "tests" / "schemathesis.toml"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "response_schema_conformance",
    "content_type_conformance",
)


@dataclass
class FuzzRun:
    who: str
    returncode: int
    output: str

    @property
    def summary(self) -> str:
        """The closing part of the report (failures, counts, seed)."""
        marker = self.output.rfind("SUMMARY")
        return self.output[marker - 40 :] if marker >= 0 else self.output[-4000:]

    @property
    def failures(self) -> str:
        """The report's failures section (what failed and how to reproduce it)."""
        start = self.output.find("FAILURES")
        return self.output[start : start + 20_000] if start >= 0 else ""


def schemathesis_command(
    base_url: str,
    token: str,
    *,
    examples: int,
    phases: str = "examples,coverage,fuzzing,stateful",
    seed: int | None = None,
    workers: int = 1,
    max_time: float | None = None,
) -> list[str]:
    """The ``schemathesis run`` command line against ``base_url`` as the token's user."""
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{base_url}/api/schema/",
        "--url",
        base_url,
        "--header",
        f"Authorization: Token {token}",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(examples),
        "--phases",
        phases,
        "--workers",
        str(workers),
        "--request-timeout",
        "30",
    ]
    if seed is not None:
        command += ["--seed", str(seed)]
    if max_time is not None:
        command += ["--max-time", str(max_time)]
    return command


def start_fuzz(base_url: str, token: str, **options) -> subprocess.Popen:
    return subprocess.Popen(
        schemathesis_command(base_url, token, **options),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(who: str, process: subprocess.Popen, *, timeout: float) -> FuzzRun:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        output += f"\n(stopped after {timeout:.0f} s)"
    return FuzzRun(who=who, returncode=process.returncode, output=output)

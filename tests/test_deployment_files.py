"""The deployment files are checked without a Docker engine: the compose file is parsed
and its services, healthchecks, volumes, pooler and scaling checked; the image is
multi-stage and runs as an unprivileged user; every variable the compose file needs is in
the env-file template. Where ``docker compose`` exists, it validates the file too."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"
COMPOSE = DOCKER / "compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def env_example() -> dict[str, str]:
    values = {}
    for line in (DOCKER / "env.example").read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2)
    return values


def environment(service: dict) -> dict:
    env = service.get("environment", {})
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def test_the_compose_file_has_the_services_of_a_production_stack(compose):
    assert {"db", "pgbouncer", "migrate", "web", "qcluster"} <= set(compose["services"])


def test_postgresql_has_a_healthcheck_and_a_named_volume(compose):
    db = compose["services"]["db"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    volume = db["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]
    assert db["volumes"][0].endswith(":/var/lib/postgresql/data")


def test_the_cluster_goes_through_pgbouncer_in_transaction_mode(compose):
    services = compose["services"]
    assert environment(services["pgbouncer"])["POOL_MODE"] == "transaction"
    qcluster = environment(services["qcluster"])
    assert "@pgbouncer:" in qcluster["DATABASE_URL"]
    assert qcluster["EDM_DATABASE_POOLER"] == "transaction"
    assert "@db:" in environment(services["web"])["DATABASE_URL"]


def test_the_cluster_scales_and_stops_gracefully(compose):
    qcluster = compose["services"]["qcluster"]
    assert "container_name" not in qcluster and "ports" not in qcluster  # scalable
    assert qcluster["command"] == ["python", "manage.py", "qcluster"]
    assert str(qcluster["deploy"]["replicas"]).startswith("${EDM_QCLUSTER_NODES")
    assert qcluster["stop_signal"] == "SIGTERM"
    assert int(qcluster["stop_grace_period"].rstrip("s")) >= 15


def test_web_and_cluster_wait_for_the_migrations(compose):
    for name in ("web", "qcluster"):
        depends = compose["services"][name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert "migrate" in " ".join(compose["services"]["migrate"]["command"])


def test_every_variable_the_compose_file_requires_is_in_the_env_template(compose):
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    documented = env_example()
    assert used - set(documented) == set()
    for required in ("POSTGRES_PASSWORD", "SECRET_KEY", "EDM_ENCRYPTION_KEY", "ALLOWED_HOSTS"):
        assert required in documented
        assert documented[required] in ("", "edm.example.com"), "no secret in the template"


def test_the_env_template_holds_the_documented_production_security_values():
    values = env_example()
    assert values["DEBUG"] == "0"
    assert int(values["EDM_HSTS_SECONDS"]) >= 31536000
    assert values["EDM_SSL_REDIRECT"] == values["EDM_SECURE_COOKIES"] == "1"


def test_local_files_the_compose_file_mounts_exist(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{name} mounts missing {source}"


def test_the_image_is_multi_stage_and_runs_unprivileged():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+(?:\s+AS\s+(\w+))?", dockerfile, flags=re.M | re.I)
    assert len(stages) >= 2
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.M)
    assert users, "no USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert "COPY --from=build" in dockerfile
    ignored = (DOCKER.parent / ".dockerignore").read_text().split()
    assert {".git", ".venv", "docker/.env"} <= set(ignored)


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="docker compose is not installed here; the file is checked by parsing it",
)
def test_docker_compose_accepts_the_file(tmp_path):
    env = tmp_path / ".env"
    env.write_text("POSTGRES_PASSWORD=x\nSECRET_KEY=y\nEDM_ENCRYPTION_KEY=z\n")
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "--env-file", str(env), "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr

"""docker-compose.yml, the Dockerfile and what they mount, checked without a Docker engine."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.settings import GatewaySettings
from gateway.tokens import TokenBook, read_token_file
from tests.deploy.settings_env import AWS_VARIABLES, env_names, load_with_env, settings_class
from tests.support.processes import REPO

pytestmark = pytest.mark.timeout(60)

COMPOSE = REPO / "docker-compose.yml"
DERMASCAN_SERVICES = ("gateway", "inference_worker", "ingest_service", "trainer_service")
BACKENDS = ("rabbitmq", "minio", "minio-init", "prometheus", "grafana")
#: Variables a service reads but that compose leaves unset on purpose, with the reason.
UNSET_ON_PURPOSE = {
    "DERMASCAN_MODEL_PATH": "workers serve the registry's current model, not a fixed file",
    "DERMASCAN_WORKER_ID": "replicas of a scaled service cannot share one id; the default is host-pid",
    "DERMASCAN_OPERATOR_TOKEN":
        "tokens come from the dermascan_api_tokens secret (digests), not the environment",
    "DERMASCAN_CONTRIBUTOR_TOKEN": "the same",
    "DERMASCAN_SPLIT_SECRET":
        "unset, the services share a random secret created once in the bucket (shared/split_secret.py)",
}
#: Where each service listens inside its container: (variable, port the compose file exposes it on).
LISTEN = {"gateway": ("DERMASCAN_HTTP_HOST", "DERMASCAN_HTTP_PORT"),
          "inference_worker": ("DERMASCAN_METRICS_HOST", "DERMASCAN_METRICS_PORT"),
          "ingest_service": ("DERMASCAN_METRICS_HOST", "DERMASCAN_METRICS_PORT"),
          "trainer_service": ("DERMASCAN_METRICS_HOST", "DERMASCAN_METRICS_PORT")}
_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's `${NAME:-default}` with no .env file: the default ('' for plain `${NAME}`)."""
    return _VARIABLE.sub(lambda m: m.group(2) or "", value).replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def service_env(compose: dict[str, Any], name: str) -> dict[str, str]:
    env = compose["services"][name].get("environment", {})
    assert isinstance(env, dict), f"{name}: write environment as a mapping"
    return {key: interpolate(str(value)) for key, value in env.items()}


def module_of(service: dict[str, Any]) -> str:
    command = service["command"]
    assert command[:2] == ["python", "-m"], command
    return str(command[2])


def test_compose_has_the_whole_system(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {*DERMASCAN_SERVICES, *BACKENDS}
    for name in DERMASCAN_SERVICES:
        module = module_of(compose["services"][name])
        assert (REPO / module / "__main__.py").is_file(), f"{name} runs `python -m {module}`: no such module"


@pytest.mark.parametrize("name", DERMASCAN_SERVICES)
def test_every_setting_a_service_reads_is_set_and_valid(
    compose: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = settings_class(module_of(compose["services"][name]))
    env = service_env(compose, name)
    wanted = (env_names(cls) | AWS_VARIABLES) - set(UNSET_ON_PURPOSE)
    assert sorted(wanted - set(env)) == [], f"{name} does not set these variables of {cls.__name__}"
    unknown = {k for k in env if k.startswith("DERMASCAN_")} - env_names(cls)
    assert sorted(unknown) == [], f"{name} sets variables {cls.__name__} never reads"
    settings = load_with_env(cls, env, monkeypatch)  # the service would start with these values
    host, port = LISTEN[name]
    assert env[host] == "0.0.0.0", f"{name} must bind all interfaces in its container"
    assert str(settings.broker_url).startswith("amqp://")  # type: ignore[attr-defined]
    assert str(settings.store_url).startswith("s3://")  # type: ignore[attr-defined]
    assert settings.s3_endpoint_url == "http://minio:9000"  # type: ignore[attr-defined]
    healthcheck = " ".join(compose["services"][name]["healthcheck"]["test"])
    assert f":{env[port]}/livez" in healthcheck, f"{name}'s health check probes another port"


def test_workers_scale_and_get_thread_settings(compose: dict[str, Any]) -> None:
    worker = compose["services"]["inference_worker"]
    assert worker["deploy"]["replicas"] >= 2
    # `--scale` needs no fixed container name and no host port per replica.
    assert "container_name" not in worker and "ports" not in worker
    env = service_env(compose, "inference_worker")
    threads = int(env["DERMASCAN_INTRA_OP_THREADS"]) * int(env["DERMASCAN_WORKER_STREAMS"])
    assert threads <= float(worker["deploy"]["resources"]["limits"]["cpus"])


def test_services_restart_check_health_and_use_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in compose["services"].items():
        if name == "minio-init":
            assert service["restart"] == "no"
            continue
        assert service.get("restart") == "unless-stopped", name
        assert service["healthcheck"]["test"][0] == "CMD", name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts {source}, which is missing"
            else:
                used.add(source)
    assert used == declared
    for name in DERMASCAN_SERVICES:
        depends = compose["services"][name]["depends_on"]
        assert depends["rabbitmq"]["condition"] == "service_healthy"
        assert depends["minio-init"]["condition"] == "service_completed_successfully"


def test_published_ports(compose: dict[str, Any]) -> None:
    ports = {name: [str(p) for p in s.get("ports", [])] for name, s in compose["services"].items()}
    assert "8080:8080" in ports["gateway"]
    assert "3000:3000" in ports["grafana"]
    assert "9090:9090" in ports["prometheus"]


def test_prometheus_scrapes_every_service_where_it_listens(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    targets: dict[str, set[str]] = {}
    for job in config["scrape_configs"]:
        found = {t for c in job.get("static_configs", []) for t in c["targets"]}
        found |= {f"{n}:{c['port']}" for c in job.get("dns_sd_configs", []) for n in c["names"]}
        targets[job["job_name"]] = found
    for name in DERMASCAN_SERVICES:
        port = service_env(compose, name)[LISTEN[name][1]]
        assert targets[name] == {f"{name}:{port}"}, name
    assert targets["rabbitmq"] == {"rabbitmq:15692"}
    plugins = (REPO / "deploy/rabbitmq/enabled_plugins").read_text()
    assert re.fullmatch(r"\[[\w,\s]+\]\.\s*", plugins), "enabled_plugins is an Erlang list ending in '.'"
    assert {"rabbitmq_prometheus", "rabbitmq_management"} <= set(re.findall(r"\w+", plugins))
    promtool = shutil.which("promtool")
    if promtool:  # Debian's prometheus package ships it (scripts/system-deps.sh)
        check = subprocess.run([promtool, "check", "config", "deploy/prometheus/prometheus.yml"],
                               cwd=REPO, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr


def test_grafana_is_provisioned_from_mounted_files(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    datasource = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((REPO / "deploy/grafana/provisioning/dashboards/dermascan.yml").read_text())
    dashboards_in_container = provider["providers"][0]["options"]["path"]
    assert mounts["./deploy/grafana/dashboards"] == dashboards_in_container
    assert (REPO / "deploy/grafana/dashboards/dermascan.json").is_file()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_in_container}/dermascan.json"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_docker_compose_validates_the_file() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (scripts/system-deps.sh installs it)")
    # `config` resolves and validates the file against the compose schema; it needs no engine.
    result = subprocess.run([binary, "-f", str(COMPOSE), "config", "-q"], cwd=REPO,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split()[0].upper(), line.split(None, 1)[1])
            for line in lines if line and not line.startswith("#")]


def test_dockerfile_is_multi_stage_slim_non_root_with_services_and_model(compose: dict[str, Any]) -> None:
    steps = dockerfile_instructions()
    stages = [arg for op, arg in steps if op == "FROM"]
    assert len(stages) >= 2 and all(s.startswith("python:3.11-slim") for s in stages), stages
    final = len(steps) - 1 - [op for op, _ in steps][::-1].index("FROM")
    users = [arg for op, arg in steps[final:] if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the runtime stage must not run as root"
    copied = set()
    for op, arg in steps:
        if op == "COPY" and not arg.startswith("--from"):
            *sources, _ = arg.split()
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
                copied.add(source.rstrip("/"))
    modules = {module_of(compose["services"][name]) for name in DERMASCAN_SERVICES}
    assert modules | {"shared", "models"} <= copied
    # The image's WORKDIR is /app: the bundled model the services are pointed at must be in models/.
    assert [arg for op, arg in steps[final:] if op == "WORKDIR"] == ["/app"]
    bundled = Path(service_env(compose, "inference_worker")["DERMASCAN_BUNDLED_MODEL_DIR"])
    in_repo = REPO / bundled.relative_to("/app")
    assert (in_repo / "model.keras").is_file() and (in_repo / "manifest.json").is_file(), \
        f"the image would have no bundled model: {in_repo} lacks model.keras or manifest.json"
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {".venv", "var", ".git", ".pytest_cache"} <= ignored
    assert not copied & ignored, "the Dockerfile copies what .dockerignore leaves out"


def test_the_gateways_tokens_come_from_a_secret_of_digests(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]
    env = service_env(compose, "gateway")
    assert gateway["secrets"] == ["dermascan_api_tokens"]
    assert env["DERMASCAN_API_TOKENS_FILE"] == "/run/secrets/dermascan_api_tokens"  # where compose mounts it
    for name, service in compose["services"].items():
        leaked = {k for k in service.get("environment",
                                         {}) if k.endswith("_TOKEN") and k.startswith("DERMASCAN_")}
        assert not leaked, f"{name} takes {leaked} from the environment"
    default = REPO / interpolate(compose["secrets"]["dermascan_api_tokens"]["file"])
    assert default.is_file(), "the secret's default file is missing: compose would mount a directory"
    assert read_token_file(default) == []  # shipped without tokens: changes are refused until one is added
    settings = GatewaySettings(api_tokens_file=default)
    assert len(TokenBook.from_settings(settings)) == 0

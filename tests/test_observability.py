"""Monitoring as code: the alert rules, the scrape config and the Grafana dashboard, checked with
promtool, against the service's metric definitions, and against a real Prometheus scraping the
running service.

The rules (docker/prometheus/rules.yml) and the dashboard (docker/grafana/dashboards/sentiment.json)
are only worth something if every expression in them means what it says on real data: a typo in a
metric name, a label the service does not export or a ratio that divides by nothing shows as an
empty panel or an alert that never fires, long after the change that broke it. So the last test
starts the service and a Prometheus, sends traffic, and runs every expression.
"""

from __future__ import annotations

import functools
import json
import math
import random
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from service.config import ROOT
from service.embedded_redis import EmbeddedRedis, free_port
from service.keys import KeyFile
from tests import synthetic
from tests.helpers import Service, answers_200, wait_until

PROMETHEUS_DIR = ROOT / "docker" / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"
RULE_TESTS = PROMETHEUS_DIR / "rules.test.yml"
SCRAPE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
GRAFANA_DIR = ROOT / "docker" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "sentiment.json"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "sentiment.yml"
DASHBOARD_MOUNT = "/var/lib/grafana/dashboards"  # where the compose stack mounts docker/grafana/dashboards

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus)")

# What the rules select by job: the scrape config, the test's Prometheus and Kubernetes must use these names.
API_JOB, WORKER_JOB = "sentiment-api", "sentiment-worker"
# Values for the dashboard's variables when its expressions run outside Grafana.
GRAFANA_VARIABLES = {
    "api_job": API_JOB,
    "worker_job": WORKER_JOB,
    "worker": ".*",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
}
BUILT_IN = re.compile(r"up|(process|python)_\w+")  # Prometheus' own series and prometheus-client's default collectors


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> list[dict]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def alerts() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_targets() -> list[tuple[str, str]]:
    """``(panel title, expression)`` of every query of every panel."""
    return [(panel["title"], target["expr"]) for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def substitute_variables(expr: str) -> str:
    """The expression as Grafana would send it, with the dashboard's variables at their defaults."""

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        assert name in GRAFANA_VARIABLES, f"unknown Grafana variable ${name} in {expr!r}"
        return GRAFANA_VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression selects (strings, label matchers, ranges, grouping labels and functions left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    found = re.findall(r"(?<![\w:.$])([A-Za-z_:][\w:]*+)(?!\s*\()", expr)
    return {name for name in found if name.lower() not in PROMQL_WORDS}


@dataclass(frozen=True)
class Query:
    where: str  # "rule <name>", "panel '<title>'" or "variable <name>"
    expr: str  # Grafana variables substituted
    is_alert: bool = False  # an alert's condition: empty while the service is healthy


def rule_and_dashboard_queries() -> list[Query]:
    """Every rule expression, dashboard query and dashboard variable query."""
    found = [Query(f"rule {rule.get('record') or rule['alert']}", rule["expr"], "alert" in rule) for rule in rules()]
    found += [Query(f"panel {title!r}", substitute_variables(expr)) for title, expr in dashboard_targets()]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            promql, _ = label_values_as_promql(substitute_variables(variable["definition"]))
            found.append(Query(f"variable {variable['name']}", promql))
    return found


def label_values_as_promql(definition: str) -> tuple[str, str]:
    """Grafana's ``label_values(selector, label)`` as the PromQL that lists the same values, and the label."""
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition.strip())
    assert match, f"unsupported variable query {definition!r}"
    return f"group by ({match.group(2)}) ({match.group(1)})", match.group(2)


# --- rules ---------------------------------------------------------------------------------


@needs_promtool
def test_rules_pass_promtool_check():
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_rule_unit_tests_pass():
    result = subprocess.run([PROMTOOL, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=120, cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not():
    fires, quiet = set(), set()
    for group in load_yaml(RULE_TESTS)["tests"]:
        for case in group.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - fires == set(), "alerts with no promtool case where they fire"
    assert names - quiet == set(), "alerts with no promtool case where they stay quiet"
    assert (fires | quiet) - names == set(), "promtool cases of alerts that do not exist"


def test_alerts_carry_what_an_on_call_needs():
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in alerts():
        assert rule.get("for"), f"{rule['alert']}: no `for:`, so one bad scrape pages"
        assert rule.get("labels", {}).get("severity") in {"critical", "warning"}, rule["alert"]
        annotations = rule.get("annotations", {})
        assert annotations.get("summary") and len(annotations.get("description", "")) > 80, f"{rule['alert']}: summary and runbook line"
    for rule in rules():
        if "record" in rule:
            assert re.fullmatch(r"\w+:\w+:\w+", rule["record"]), f"recording rule {rule['record']} is not level:metric:operations"


# --- scrape config -------------------------------------------------------------------------


@needs_promtool
def test_scrape_config_is_valid_and_finds_the_rules():
    result = subprocess.run([PROMTOOL, "check", "config", str(SCRAPE_CONFIG)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout  # resolved relative to the config, as under /etc/prometheus


def test_scrape_config_covers_the_api_and_every_worker_replica():
    config = load_yaml(SCRAPE_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert config["rule_files"] == ["rules.yml"]
    assert [t for c in jobs[API_JOB]["static_configs"] for t in c["targets"]] == ["api:8000"]
    (workers,) = jobs[WORKER_JOB]["dns_sd_configs"]
    assert workers == {**workers, "names": ["worker"], "type": "A", "port": 9100}


# --- dashboard -----------------------------------------------------------------------------


def test_grafana_provisioning_points_at_the_dashboard_and_its_datasource():
    (datasource,) = load_yaml(DATASOURCES)["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    (provider,) = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == DASHBOARD_MOUNT


def test_dashboard_panels_are_complete_and_do_not_overlap():
    board = dashboard()
    uid = load_yaml(DATASOURCES)["datasources"][0]["uid"]
    panels = board["panels"]
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36  # Grafana 10/11 JSON model
    assert len(panels) >= 12
    assert len({p["id"] for p in panels}) == len(panels), "duplicate panel ids"
    taken: dict[tuple[int, int], str] = {}
    for panel in panels:
        title = panel["title"]
        assert panel.get("description", "").strip(), f"{title}: no description"
        if panel["type"] == "row":  # a heading across the grid; expanded, so its panels follow it in the list
            assert panel["gridPos"] == {**panel["gridPos"], "x": 0, "w": 24, "h": 1} and not panel["collapsed"] and not panel["panels"]
            assert "targets" not in panel, f"row {title} has queries"
            taken.update({(x, panel["gridPos"]["y"]): title for x in range(24)})
            continue
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), f"{title}: no query"
        assert panel["datasource"]["uid"] == uid and all(t["datasource"]["uid"] == uid for t in panel["targets"]), title
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{title}: duplicate refIds"
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, f"{title}: wider than the grid"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{title} overlaps {taken[(x, y)]}"
                taken[(x, y)] = title
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == uid, variable["name"]


def test_dashboard_covers_what_the_on_call_watches():
    used = set().union(*(metric_names(substitute_variables(expr)) for _, expr in dashboard_targets()))
    for name in [
        "sentiment_http_requests_total",
        "sentiment_requests_refused_total",
        "sentiment_http_request_duration_seconds_bucket",
        "sentiment_queue_backlog",
        "sentiment_queue_oldest_waiting_age_seconds",
        "sentiment_live_workers",
        "sentiment_batch_texts_sum",
        "sentiment_batch_padding_efficiency_ratio_sum",
        "sentiment_queue_wait_seconds_bucket",
        "sentiment_model_duration_seconds_bucket",
        "sentiment_prediction_score_bucket",
        "sentiment_predictions_total",
        "sentiment_text_tokens_bucket",
        "sentiment_text_oov_ratio_sum",
        "sentiment_redis_up",
        "sentiment_key_requests_total",
        "sentiment_auth_refusals_total",
        "sentiment_key_texts_total",
    ]:
        assert name in used, f"no panel shows {name}"
    # The "Access" row: the API keys' panels sit under it, side by side.
    rows = [p for p in dashboard()["panels"] if p["type"] == "row"]
    (access,) = [r for r in rows if r["title"] == "Access"]
    below = [p for p in dashboard()["panels"] if p["gridPos"]["y"] == access["gridPos"]["y"] + 1]
    assert {name for p in below for name in metric_names(substitute_variables(p["targets"][0]["expr"]))} == {
        "sentiment_key_requests_total",
        "sentiment_auth_refusals_total",
        "sentiment_key_texts_total",
    }
    (refusals,) = [p for p in below if "sentiment_auth_refusals_total" in p["targets"][0]["expr"]]
    assert "by (reason)" in refusals["targets"][0]["expr"]
    assert all("by (key)" in p["targets"][0]["expr"] for p in below if p is not refusals)
    heatmaps = [p for p in dashboard()["panels"] if p["type"] == "heatmap"]
    assert any("sentiment_prediction_score_bucket" in t["expr"] and t.get("format") == "heatmap" for p in heatmaps for t in p["targets"])


def defined_metric_names() -> set[str]:
    """Every series name the service can export, from its metric definitions (``service/metrics.py``)."""
    from prometheus_client import REGISTRY

    from service import metrics

    names = {f"sentiment_{key}" for key in metrics.STATE_HELP}
    families = list(REGISTRY.collect()) + metrics.info_gauges([("sentiment", 1, "tokenizer")], worker={"consumer": "c", "device": "cpu"})
    for family in families:
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "info": ["_info"]}.get(family.type, [""])
        names |= {family.name + suffix for suffix in suffixes}
    return names


def test_every_series_the_rules_and_the_dashboard_use_is_defined():
    defined = defined_metric_names() | {rule["record"] for rule in rules() if "record" in rule}
    unknown = {
        (q.where, name)
        for q in rule_and_dashboard_queries()
        for name in metric_names(q.expr)
        if name not in defined and not BUILT_IN.fullmatch(name)
    }
    assert not unknown, f"series that service/metrics.py does not define: {sorted(unknown)}"


def test_metric_name_extraction():
    expr = (
        'sum by (le) (rate(a_bucket{job=~"x|y", le!="1"}[5m])) / on (job) group_left (version) b:c:d offset 1d'
        " > bool 0.5 * max(e_total) and absent(up{job='z'}) unless vector(1)"
    )
    assert metric_names(expr) == {"a_bucket", "b:c:d", "e_total", "up"}


# --- a real Prometheus ---------------------------------------------------------------------


@contextmanager
def running_prometheus(workdir: Path, api_port: int, worker_port: int) -> Iterator[str]:
    """Prometheus on loopback scraping the API and the worker every second, with the repository's rules."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": API_JOB, "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}]},
            {"job_name": WORKER_JOB, "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    command = [
        PROMETHEUS,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    url = f"http://127.0.0.1:{port}"
    with open(workdir / "prometheus.log", "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    try:
        ready = functools.partial(answers_200, f"{url}/-/ready", process, workdir / "prometheus.log")
        wait_until(ready, 30, interval_s=0.2, what="Prometheus to be ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_scraping(prometheus: str) -> None:
    """Until both targets have been scraped: discovery hands them to the scrapers after up to 5 s, and traffic before would be missed."""

    def scraping() -> bool:
        targets = requests.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        return len(targets) == 2 and all(target["health"] == "up" for target in targets)

    wait_until(scraping, 30, interval_s=0.2, what="Prometheus to scrape the API and the worker")


def query(prometheus: str, expr: str) -> dict:
    """Prometheus' answer to an instant query: ``{"status": "success", "data": {...}}`` or ``{"status": "error", ...}``."""
    return requests.post(f"{prometheus}/api/v1/query", data={"query": expr}, timeout=10).json()


def without_data(prometheus: str, queries: list[Query]) -> list[str]:
    """The queries, alert conditions aside, that return no series or only NaN (0/0: nothing happened in the window).

    A day-earlier query runs without its offset: there is no yesterday here, but its series must exist today.
    """
    missing = []
    for q in queries:
        if not q.is_alert:
            answer = query(prometheus, re.sub(r"\s+offset\s+\w+", "", q.expr))
            values = [float(r["value"][1]) for r in answer["data"]["result"]] if answer["status"] == "success" else []
            if not any(math.isfinite(v) for v in values):
                missing.append(f"{q.where}: {q.expr} -> {answer.get('data', {}).get('result') or answer.get('error')}")
    return missing


def variable_values(prometheus: str) -> dict[str, set[str]]:
    """What each single-value query variable of the dashboard offers, as Grafana would list it."""
    offered = {}
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query" and not variable.get("multi"):
            promql, label = label_values_as_promql(substitute_variables(variable["definition"]))
            offered[variable["name"]] = {r["metric"].get(label) for r in query(prometheus, promql)["data"]["result"]}
    return offered


def make_keys(path: Path) -> dict[str, str]:
    """A key file with two keys, as ``python -m service.keys create`` writes it: ``traffic`` (predict) and ``slow``
    (predict, one request, then one every 10 s)."""
    keys, made = KeyFile(), {}
    keys, _, made["traffic"] = keys.create("traffic", ["predict"])
    keys, _, made["slow"] = keys.create("slow", ["predict"], rate_per_s=0.1, burst=1)
    keys.save(path)
    return made


def send_traffic(service: Service, rng: random.Random, keys: dict[str, str]) -> None:
    """Predictions of both labels (some long, some with unknown words) and one refused request of each reason we can
    cause, access control's included."""
    auth = {"Authorization": f"Bearer {keys['traffic']}"}
    for i in range(12):
        texts = [synthetic.review(rng, positive=(i + j) % 2 == 0) for j in range(1 + i % 3)]
        if i % 4 == 0:
            texts.append(synthetic.review(rng, positive=True, length=90) + " zqxv blorft")  # truncated, out of vocabulary
        response = service.predict({"texts": texts}, headers={**auth, "X-Request-ID": f"traffic-{i}"})  # its route, fixed by its id
        assert response.status_code == 200, response.text
    refused = {
        "bad_request": requests.post(
            f"{service.url}/predict", data=b"{not json", headers={**auth, "Content-Type": "application/json"}, timeout=5
        ),
        "too_large": service.predict({"texts": ["great"] * 9}, headers=auth),
        "unsupported_media_type": requests.post(
            f"{service.url}/predict", data=b"great", headers={**auth, "Content-Type": "text/plain"}, timeout=5
        ),
        "deadline_exceeded": service.predict({"text": "great"}, headers={**auth, "X-Deadline-Ms": "1"}),
        "missing": service.predict({"text": "great"}),
        "invalid": service.predict({"text": "great"}, headers={"Authorization": "Bearer sk_00000000_" + "A" * 43}),
        "forbidden": service.predict({"text": "great", "explain": True}, headers=auth),
        "rate_limited": [service.predict({"text": "great"}, headers={"X-API-Key": keys["slow"]}) for _ in range(2)][-1],
    }
    statuses = {reason: response.status_code for reason, response in refused.items()}
    assert statuses == {
        "bad_request": 400,
        "too_large": 413,
        "unsupported_media_type": 415,
        "deadline_exceeded": 504,
        "missing": 401,
        "invalid": 401,
        "forbidden": 403,
        "rate_limited": 429,
    }


@pytest.mark.slow
@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed (Debian: apt-get install prometheus; .ci/run does it)")
def test_every_rule_and_panel_works_on_a_real_prometheus(tiny_two_versions, tmp_path):
    worker_port = free_port()
    rng = random.Random(7)
    queries = rule_and_dashboard_queries()
    # Access control on, so that the "Access" row has series: keys by name, refusals by reason.
    keys = make_keys(tmp_path / "keys.json")
    # Two versions, a canary and a shadow, so that the "Versions" panels and rules have series to read.
    config = tmp_path / "models.yaml"
    config.write_text(
        "models: {sentiment: {versions: [1, 2], labels: {stable: 1, canary: 2}, default: stable,"
        " canary: {label: canary, percent: 50}, shadow: {label: canary, percent: 100}}}"
    )
    with EmbeddedRedis() as redis_server:
        service = Service(
            redis_server.url,
            tiny_two_versions,
            settings={
                "SENTIMENT_MODEL_CONFIG": str(config),
                "SENTIMENT_WORKER_METRICS_PORT": str(worker_port),
                "SENTIMENT_MAX_TEXTS_PER_REQUEST": "8",
                "SENTIMENT_STEP_OVERHEAD_TEXTS": "4",  # how batches split by length does not matter here: skip measuring it at start
                "SENTIMENT_AUTH": "api_keys",
                "SENTIMENT_API_KEYS_FILE": str(tmp_path / "keys.json"),
            },
            log_dir=tmp_path,
        )
        # Prometheus first: its discovery delay passes while the worker loads TensorFlow.
        with running_prometheus(tmp_path, service.port, worker_port) as prometheus, service.running():
            wait_scraping(prometheus)
            # Two waves a few scrapes apart, so that every counter and histogram grows between two samples.
            send_traffic(service, rng, keys)
            time.sleep(2.5)
            send_traffic(service, rng, keys)
            # Rules evaluate every second and rates need two samples after the last wave: poll until all have data.
            give_up_at = time.monotonic() + 20
            while (missing := without_data(prometheus, queries)) and time.monotonic() < give_up_at:
                time.sleep(1)
            refused = [f"{q.where}: {answer['error']}" for q in queries if (answer := query(prometheus, q.expr))["status"] != "success"]
            variables = variable_values(prometheus)
            targets = requests.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
            exported = set(requests.get(f"{prometheus}/api/v1/label/__name__/values", timeout=10).json()["data"])
            loaded = requests.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]

    assert {t["labels"]["job"]: t["health"] for t in targets} == {API_JOB: "up", WORKER_JOB: "up"}, targets
    # A job variable lists its own job only: the series it reads come from one tier.
    assert variables == {"api_job": {API_JOB}, "worker_job": {WORKER_JOB}}
    assert not refused, "queries Prometheus refuses:\n" + "\n".join(refused)
    unexported = sorted({name for q in queries for name in metric_names(q.expr)} - exported)
    assert not unexported, f"series that no target exports and no rule records: {unexported}"
    assert not missing, "queries with no data after traffic:\n" + "\n".join(missing)
    health = {rule["name"]: (rule["health"], rule.get("lastError", "")) for group in loaded for rule in group["rules"]}
    assert set(health) == {rule.get("record") or rule["alert"] for rule in rules()}
    assert all(state == ("ok", "") for state in health.values()), health

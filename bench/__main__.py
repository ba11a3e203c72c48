"""``python -m bench`` (``make bench``): this service against other designs, side by side, in one run.

Designs, all running on this machine at once (idle while another is measured),
each loaded in turn by ``wrk`` with the same real IMDB test reviews at the same
concurrency, round after round:

* ``naive``: one Flask app under gunicorn that calls the model once per request,
  in its own process (with the same model graph as the service);
* ``service``: this service as ``make run`` starts it; ``explain``: the same
  processes, every request asking for explanations (``"explain": true``);
  ``head_tail``: the same service reading long texts by their first and last
  tokens only (``SENTIMENT_LONG_TEXT_POLICY=head_tail``), the cost of reading
  them whole in windows;
* ``echo``: Flask under gunicorn answering the same bodies with no work at all:
  the HTTP ceiling of this machine;
* ``null``: this service's API, Redis and worker loop around a model call that
  costs nothing (`bench.null_worker`): what the serving path itself costs;
* ``bentoml`` (``--peers bentoml``, ``make bench PEERS=bentoml``): BentoML with
  adaptive batching, 2 workers, serving the same SavedModel's ``predict_text``,
  installed into a virtualenv of its own.

Each round also reads, from ``/proc``, the CPU time every process of the
design under load used, per request answered: on a machine where everything
competes for the same cores, CPU per request is what bounds throughput. Also
measured: the model alone (reviews/s and CPU per review at batch 1 and 128) and
the tokenizer.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from service.config import ROOT
from service.embedded_redis import EmbeddedRedis, free_port

WRK_SCRIPT = Path(__file__).with_name("wrk_post.lua")
GUNICORN_CONF = str(ROOT / "service" / "gunicorn_conf.py")
BENTOML_VENV = ROOT / ".venv-bentoml"
BENTOML_REQUIREMENTS = Path(__file__).with_name("requirements-bentoml.txt")


def load_reviews(path: Path, n: int, seed: int) -> list[str]:
    from training.data import load

    texts = load(path)["test"].texts
    return random.Random(seed).sample(texts, min(n, len(texts)))


def wait_ready(url: str, timeout_s: float = 300, body: bytes | None = None) -> None:
    """Until ``url`` answers 200 (a GET, or a JSON POST of ``body``)."""
    give_up_at = time.monotonic() + timeout_s
    while time.monotonic() < give_up_at:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready after {timeout_s}s")


# A process's role, by a needle in its command line (first match wins).
CPU_ROLES = (
    ("service.worker", "worker"),
    ("bench.null_worker", "worker"),
    ("redis-server", "redis"),
    ("gunicorn", "api"),
    ("bentoml", "api"),
)
ROLES = ("api", "worker", "redis")


def stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` after the command name (which may hold spaces): state, ppid, ..., utime, stime, ..."""
    return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()


def process_roles(root: int) -> dict[int, str]:
    """``root`` and its descendants (Linux ``/proc``), each named by its role in the design."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int(stat_fields(int(entry.name))[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    roles, todo = {}, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            command = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        roles[pid] = next((role for needle, role in CPU_ROLES if needle in command), "other")
    return roles


def cpu_seconds(roles: dict[int, str]) -> dict[str, float]:
    """CPU time (user + system) used so far by each role's processes."""
    ticks = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for pid, role in roles.items():
        try:
            fields = stat_fields(pid)
        except OSError:
            continue
        used[role] = used.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return used


@dataclass
class Design:
    """One system under test: its processes, where it listens, what it is sent."""

    name: str
    label: str
    port: int
    bodies: Path
    processes: list[subprocess.Popen] = field(default_factory=list)
    ready: Callable[[], None] = lambda: None
    cleanup: Callable[[], None] = lambda: None
    api_key: str | None = None  # sent as `Authorization: Bearer` when the design asks for keys

    def roles(self) -> dict[int, str]:
        roles: dict[int, str] = {}
        for process in self.processes:
            roles.update(process_roles(process.pid))
        return roles

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.cleanup()


def measure(design: Design, args) -> dict:
    """One ``wrk`` run, plus the CPU milliseconds per request of each of the design's processes."""
    roles = design.roles()
    before = cpu_seconds(roles)
    result = run_wrk(design.port, args.connections, args.seconds, design.bodies, args.wrk_threads, design.api_key)
    after = cpu_seconds(roles)
    requests = max(result["requests"], 1)
    result["cpu_ms"] = {role: 1000 * (after.get(role, 0.0) - used) / requests for role, used in before.items()}
    return result


def run_wrk(port: int, connections: int, seconds: int, bodies: Path, threads: int, api_key: str | None = None) -> dict:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        f"http://127.0.0.1:{port}",
    ]
    env = {**os.environ, "BODIES_FILE": str(bodies), **({"API_KEY": api_key} if api_key else {})}
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    seconds_run = summary["duration_us"] / 1e6
    return {
        "rps": summary["requests"] / seconds_run,
        "p50_ms": summary["p50_us"] / 1000,
        "p99_ms": summary["p99_us"] / 1000,
        "errors": summary["non2xx"] + summary["socket_errors"],
        "requests": summary["requests"],
        "statuses": summary["statuses"],
    }


def model_alone(texts: list[str]) -> dict:
    """Reviews/s and CPU per review of the served SavedModel alone, and the tokenizer's time per review."""
    import numpy as np

    from service.config import load_settings
    from service.model_store import resolve
    from service.worker.model import SentimentModel, configure_devices

    version = resolve(ROOT / "model_store" / "sentiment")
    tokenizer = version.load_tokenizer()
    started = time.perf_counter()
    encoded = tokenizer.encode_batch(texts)
    encode_us = (time.perf_counter() - started) / len(texts) * 1e6
    words = np.mean([len(t.split()) for t in texts])
    model = SentimentModel(version, configure_devices(load_settings().tf_threads))
    model.warm_up()
    out = {"model": f"{version.name} v{version.version}", "encode_us_per_review": encode_us, "mean_words": float(words)}
    sequences = [window for e in encoded for window in e.windows]  # what the model reads: long reviews in windows
    for batch in (1, 128):
        n = 300 if batch == 1 else 2048
        started, cpu_started = time.perf_counter(), time.process_time()
        for start in range(0, n, batch):
            model.predict(sequences[start % len(sequences) : start % len(sequences) + batch])
        out[f"reviews_per_s_batch_{batch}"] = n / (time.perf_counter() - started)
        out[f"cpu_ms_per_review_batch_{batch}"] = 1000 * (time.process_time() - cpu_started) / n
    return out


# The service with a model config file (docs/models.md): one version, as without a file (what the config costs on the
# default path); and two versions with a 10 % canary and a 50 % shadow (what they cost).
MODEL_CONFIGS = [
    ("config", "this service, a model config of one version", "models: {sentiment: {versions: [3]}}\n"),
    (
        "canary_shadow",
        "this service, v3 + a 10 % canary and a 50 % shadow (v2)",
        "models: {sentiment: {versions: [2, 3], labels: {stable: 3, canary: 2}, default: stable,"
        " canary: {label: canary, percent: 10}, shadow: {label: canary, percent: 50}}}\n",
    ),
]


def key_check_alone(calls: int = 5000) -> dict:
    """What access control costs the API process per request, alone, in CPU microseconds: reading and checking the key
    (in process), and charging its token bucket inside the enqueue's script (a charged enqueue against a plain one:
    the same round trip, a longer script); beside it, what a round trip of its own would cost (the bucket's script
    alone)."""
    from service.keys import ApiKeys, KeyFile, parse_presented
    from service.queue import RequestQueue, connect
    from service.rate_limit import Charge, RateLimiter

    work = Path(tempfile.mkdtemp(prefix="sentiment-bench-keys-"))
    records, _, key = KeyFile().create("bench", ("predict",), 1e6, None)
    records.save(work / "keys.json")
    keys = ApiKeys(work / "keys.json")
    header = f"Bearer {key}"

    def cpu_us(call: Callable[[], object]) -> float:
        call()
        started = time.process_time()
        for _ in range(calls):
            call()
        return (time.process_time() - started) / calls * 1e6

    out = {"key_check_us": cpu_us(lambda: keys.authenticate(parse_presented(header, None).key))}
    charge = Charge("bench", 1e9, 1_000_000_000)
    sequence = [[5] * 200]
    with EmbeddedRedis() as redis:
        connection = connect(redis.url, 1.0)
        queue = RequestQueue(connection, "bench", "sentiment", 1)
        plain = cpu_us(lambda: queue.enqueue(os.urandom(8).hex(), sequence, 0, 10**9, "api"))
        charged = cpu_us(lambda: queue.enqueue_charged(charge, os.urandom(8).hex(), sequence, 0, 10**9, "api"))
        limiter = RateLimiter(connection, "bench")
        out["bucket_charged_us"] = charged - plain
        out["bucket_own_trip_us"] = cpu_us(lambda: limiter.take(charge))
    shutil.rmtree(work, ignore_errors=True)
    return out


def request_limit_alone(calls: int = 50_000) -> dict:
    """What the API's request limit (service/api/concurrency.py) costs per request, in CPU microseconds: a slot
    taken and given back around a WSGI app that answers at once, against that app alone."""
    from service.api.concurrency import ConcurrencyLimit

    def answer(environ, start_response):
        return [b""]

    limited = ConcurrencyLimit(answer, 256)
    environ = {"PATH_INFO": "/predict"}

    def cpu_us(app) -> float:
        started = time.process_time()
        for _ in range(calls):
            app(environ, None)
        return (time.process_time() - started) / calls * 1e6

    return {"request_limit_us": cpu_us(limited) - cpu_us(answer)}


def spawn(command: list[str], env: dict[str, str], log) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)


def start_designs(args, work: Path, texts: list[str], log) -> list[Design]:
    """Start every design; the caller stops them."""
    predict_bodies = work / "bodies.jsonl"
    predict_bodies.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    python = sys.executable
    designs: list[Design] = []

    naive = Design("naive", "naive: Flask + model per request", free_port(), predict_bodies)
    naive.processes.append(
        spawn(
            [python, "-m", "gunicorn", "--workers", str(args.naive_processes), "--worker-class", "gthread", "--threads", "4",
             "--bind", f"127.0.0.1:{naive.port}", "--no-control-socket", "--log-level", "warning", "bench.naive_app:create_app()"],
            env, log,
        )
    )  # fmt: skip
    naive.ready = lambda d=naive: wait_ready(f"http://127.0.0.1:{d.port}/predict", body=b'{"text": "warm up"}')
    designs.append(naive)

    service = Design("service", "this service (`make run` defaults)", free_port(), predict_bodies)
    service.processes.append(spawn([python, "-m", "service.launcher"], {**env, "PORT": str(service.port)}, log))
    service.ready = lambda d=service: wait_ready(f"http://127.0.0.1:{d.port}/readyz")
    designs.append(service)

    explain_bodies = work / "bodies-explain.jsonl"
    explain_bodies.write_text("".join(json.dumps({"text": t, "explain": True}) + "\n" for t in texts), encoding="utf-8")
    explain = Design("explain", 'this service, every request with `"explain": true`', service.port, explain_bodies)
    explain.processes = service.processes  # the same processes, measured in their own turn
    designs.append(explain)

    for name, what, config in MODEL_CONFIGS:
        configured = Design(name, what, free_port(), predict_bodies)
        (work / f"{name}.yaml").write_text(config, encoding="utf-8")
        configured_env = {**env, "PORT": str(configured.port), "SENTIMENT_MODEL_CONFIG": str(work / f"{name}.yaml")}
        configured_env["SENTIMENT_WORKER_METRICS_PORT"] = "0"
        configured.processes.append(spawn([python, "-m", "service.launcher"], configured_env, log))
        configured.ready = lambda d=configured: wait_ready(f"http://127.0.0.1:{d.port}/readyz")
        designs.append(configured)

    designs.append(start_with_keys(work, predict_bodies, env, log))

    head_tail = Design("head_tail", "this service, long texts read head + tail only", free_port(), predict_bodies)
    head_tail_env = {**env, "PORT": str(head_tail.port), "SENTIMENT_LONG_TEXT_POLICY": "head_tail", "SENTIMENT_WORKER_METRICS_PORT": "0"}
    head_tail.processes.append(spawn([python, "-m", "service.launcher"], head_tail_env, log))
    head_tail.ready = lambda d=head_tail: wait_ready(f"http://127.0.0.1:{d.port}/readyz")
    designs.append(head_tail)

    echo = Design("echo", "echo: Flask + gunicorn, no work (HTTP ceiling)", free_port(), predict_bodies)
    echo.processes.append(
        spawn([python, "-m", "gunicorn", "-c", GUNICORN_CONF, "bench.echo_app:create_app()"], {**env, "PORT": str(echo.port)}, log)
    )
    echo.ready = lambda d=echo: wait_ready(f"http://127.0.0.1:{d.port}/predict", body=b'{"text": "warm up"}')
    designs.append(echo)

    redis = EmbeddedRedis().start()
    null = Design("null", "this service, model call costing nothing", free_port(), predict_bodies)
    null_env = {**env, "SENTIMENT_REDIS_URL": redis.url, "PORT": str(null.port), "SENTIMENT_WORKER_METRICS_PORT": str(free_port())}
    null.processes += [
        redis.process,
        spawn([python, "-m", "gunicorn", "-c", GUNICORN_CONF, "service.api.app:create_app()"], null_env, log),
        spawn([python, "-m", "bench.null_worker"], null_env, log),
    ]
    null.ready = lambda d=null: wait_ready(f"http://127.0.0.1:{d.port}/readyz")
    null.cleanup = redis.cleanup
    designs.append(null)

    if "bentoml" in args.peers:
        designs.append(start_bentoml(args, work, texts, env, log))
    return designs


def start_with_keys(work: Path, bodies: Path, env: dict[str, str], log) -> Design:
    """This service with API keys on: every request's key checked and its token bucket taken in Redis (a rate no
    request reaches, so that every request pays the check and none is refused)."""
    keys = work / "api-keys.json"
    created = subprocess.run(
        [sys.executable, "-m", "service.keys", "create", "bench", "--file", str(keys), "--rate-per-s", "1000000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    design = Design("auth", "this service, API keys on (key + rate limit per request)", free_port(), bodies)
    design.api_key = created.stdout.splitlines()[-1]
    auth_env = {**env, "PORT": str(design.port), "SENTIMENT_AUTH": "api_keys", "SENTIMENT_API_KEYS_FILE": str(keys)}
    auth_env["SENTIMENT_WORKER_METRICS_PORT"] = "0"
    design.processes.append(spawn([sys.executable, "-m", "service.launcher"], auth_env, log))
    design.ready = lambda: wait_ready(f"http://127.0.0.1:{design.port}/readyz")
    return design


def start_bentoml(args, work: Path, texts: list[str], env: dict[str, str], log) -> Design:
    """BentoML, from a virtualenv of its own (created on first use), serving the served version's ``predict_text``."""
    from service.model_store import resolve

    bentoml = BENTOML_VENV / "bin" / "bentoml"
    if not bentoml.exists():
        print(f"installing BentoML into {BENTOML_VENV} ...", flush=True)  # noqa: T201
        subprocess.run([sys.executable, "-m", "venv", str(BENTOML_VENV)], check=True)
        pip = [str(BENTOML_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "-r", str(BENTOML_REQUIREMENTS)], check=True)
    bodies = work / "bodies-bentoml.jsonl"
    bodies.write_text("".join(json.dumps({"texts": [t]}) + "\n" for t in texts), encoding="utf-8")
    design = Design("bentoml", "BentoML, adaptive batching, 2 workers, same SavedModel", free_port(), bodies)
    version = resolve(ROOT / "model_store" / "sentiment")
    peer_env = {**env, "BENTOML_HOME": str(work / "bentoml"), "SENTIMENT_BENCH_MODEL": str(version.path)}
    command = [str(bentoml), "serve", "bench.bentoml_service:Sentiment", "--port", str(design.port), "--host", "127.0.0.1"]
    design.processes.append(spawn(command, peer_env, log))
    design.ready = lambda: wait_ready(f"http://127.0.0.1:{design.port}/predict", body=b'{"texts": ["warm up"]}')
    return design


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "aclImdb_v1_labeled.tar.gz", help="IMDB archive/folder.")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--seconds", type=int, default=20, help="Measured seconds per design per round.")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reviews", type=int, default=2000, help="Distinct review texts sent in rotation.")
    p.add_argument("--naive-processes", type=int, default=2, help="gunicorn processes of the naive design (one per core).")
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--peers", default="", help="Comma-separated other serving systems to measure too: bentoml.")
    p.add_argument("--only", default="", help="Comma-separated designs to measure (default: all).")
    args = p.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    if not args.data.exists():
        sys.exit(f"{args.data}: IMDB data not found (--data)")
    args.peers = {peer for peer in args.peers.split(",") if peer}
    unknown = args.peers - {"bentoml"}
    if unknown:
        sys.exit(f"unknown peer(s): {', '.join(sorted(unknown))}")

    texts = load_reviews(args.data, args.reviews, seed=0)
    alone = model_alone(texts)
    alone.update(key_check_alone())
    alone.update(request_limit_alone())
    work = Path(tempfile.mkdtemp(prefix="sentiment-bench-"))
    log = open(work / "servers.log", "wb")  # noqa: SIM115 - closed in finally
    started: list[Design] = []
    try:
        started = designs = start_designs(args, work, texts, log)
        if args.only:  # every design is started (as in a full run, the others sit idle), only these are measured
            wanted = set(args.only.split(","))
            designs = [d for d in started if d.name in wanted]
        for design in designs:
            design.ready()
        for design in designs:  # warm every design up
            run_wrk(design.port, args.connections, 5, design.bodies, args.wrk_threads, design.api_key)
        results: dict[str, list[dict]] = {d.name: [] for d in designs}
        for _ in range(args.rounds):
            for design in designs:
                results[design.name].append(measure(design, args))
                print(design.name, json.dumps(results[design.name][-1]), flush=True)  # noqa: T201
    except BaseException:
        log.flush()
        print((work / "servers.log").read_text(errors="replace")[-3000:], file=sys.stderr)  # noqa: T201
        raise
    finally:
        for design in started:
            if design.name != "explain":  # its processes are the service's
                design.stop()
        log.close()
    print(report(results, {d.name: d.label for d in designs}, alone, args))  # noqa: T201
    shutil.rmtree(work, ignore_errors=True)
    return 0


def report(results: dict[str, list[dict]], labels: dict[str, str], alone: dict, args) -> str:
    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    def cpu(name: str, role: str) -> float:
        return statistics.median(r["cpu_ms"].get(role, 0.0) for r in results[name])

    def ratio(a: str, b: str) -> str:
        if a not in results or b not in results:
            return "n/a"
        value = statistics.median(x["rps"] / y["rps"] for x, y in zip(results[a], results[b], strict=True))
        return f"**{value:.2f}x** (p99 {median(a, 'p99_ms'):.0f} ms against {median(b, 'p99_ms'):.0f} ms)"

    lines = [
        f"`make bench`: {args.connections} connections, {args.rounds} rounds x {args.seconds} s per design, "
        f"{args.reviews} IMDB test reviews (mean {alone['mean_words']:.0f} words), one per request, in rotation; model {alone['model']}.",
        "",
        "| design | req/s (median) | p50 ms | p99 ms | errors | req/s per round |",
        "|---|---|---|---|---|---|",
    ]
    for name in results:
        rounds = ", ".join(f"{r['rps']:.0f}" for r in results[name])
        errors = sum(r["errors"] for r in results[name])
        lines.append(
            f"| {labels[name]} | {median(name, 'rps'):.0f} | {median(name, 'p50_ms'):.0f} | {median(name, 'p99_ms'):.0f} "
            f"| {errors} | {rounds} |"
        )
    lines += [
        "",
        "Ratios (median of per-round throughput ratios):",
        f"- service / naive: {ratio('service', 'naive')}",
        f"- service / BentoML: {ratio('service', 'bentoml')}",
        f"- null-model service / echo: {ratio('null', 'echo')}",
        f"- explain / service: {ratio('explain', 'service')}",
        f"- service (long texts in windows) / head + tail: {ratio('service', 'head_tail')}",
        f"- service with a one-version model config / without: {ratio('config', 'service')}",
        f"- canary 10 % + shadow 50 % / one version: {ratio('canary_shadow', 'config')}",
        f"- API keys on / off: {ratio('auth', 'service')}",
        "",
        "CPU per request (ms, median of rounds; the load generator's own CPU is not counted):",
        "",
        "| design | api | worker | redis | total |",
        "|---|---|---|---|---|",
    ]
    for name in results:
        cells = " | ".join(f"{cpu(name, role):.2f}" if cpu(name, role) else "-" for role in ROLES)
        lines.append(f"| {labels[name]} | {cells} | {sum(cpu(name, role) for role in ROLES):.2f} |")
    for name, base, what in (
        ("config", "service", "A one-version model config"),
        ("canary_shadow", "config", "A canary and a shadow"),
        ("auth", "service", "API keys (a key and its token bucket checked per request)"),
    ):
        if name in results and base in results:
            extra = sum(cpu(name, role) for role in ROLES) - sum(cpu(base, role) for role in ROLES)
            parts = ", ".join(f"{role} {cpu(name, role) - cpu(base, role):+.3f}" for role in ROLES)
            lines += ["", f"{what} costs {extra:+.2f} ms of CPU per request ({parts}; {labels[name]} against {labels[base]})."]
    if "service" in results and "explain" in results:
        total = {name: sum(cpu(name, role) for role in ROLES) for name in ("service", "explain")}
        lines += ["", f"Explanations cost {total['explain'] / total['service']:.2f}x the CPU of a plain prediction per request."]
    if "service" in results and "null" in results:
        lines += [
            "",
            f"The model inside the service (worker CPU of `service` minus that of `null`, per review): "
            f"{cpu('service', 'worker') - cpu('null', 'worker'):.2f} ms. "
            f"The serving path without the model (`null`: API + Redis + worker loop): "
            f"{sum(cpu('null', role) for role in ROLES):.2f} ms per request.",
        ]
    lines += [
        "",
        f"Model alone: {alone['reviews_per_s_batch_1']:.0f} reviews/s at batch 1, {alone['reviews_per_s_batch_128']:.0f} at batch 128; "
        f"CPU per review {alone['cpu_ms_per_review_batch_1']:.2f} ms at batch 1, "
        f"{alone['cpu_ms_per_review_batch_128']:.2f} ms at batch 128; "
        f"tokenizer: {alone['encode_us_per_review']:.0f} us per review.",
        "",
        f"API keys alone (API process CPU per request): reading and checking the key {alone['key_check_us']:.1f} us; "
        f"charging its token bucket in the enqueue's round trip {alone['bucket_charged_us']:+.1f} us "
        f"(in a round trip of its own it would cost {alone['bucket_own_trip_us']:.1f} us); "
        f"together {(alone['key_check_us'] + alone['bucket_charged_us']) / 1000:.3f} ms.",
        "",
        f"The request limit alone (a place taken and given back, API process CPU per request): {alone['request_limit_us']:.2f} us.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

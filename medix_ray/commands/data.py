"""`medix-ray data validate | preview` (a dataset read through Ray Data) and `medix-ray generate` (vLLM samples)."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from medix_ray.commands.common import add_config_args, config_of
from medix_ray.config import MedixConfig

logger = logging.getLogger(__name__)


def cmd_data_validate(args: argparse.Namespace) -> int:
    from medix_ray.data.prompt_length import PromptLengthCheck
    from medix_ray.data.readers import iter_validated, read_samples_from_config

    cfg = config_of(args)
    splits = ("train", "test") if args.split == "all" else (args.split,)
    failed = False
    length_check = PromptLengthCheck.from_config(cfg)
    for split in splits:
        ds, report = read_samples_from_config(cfg.data, split, length_check)
        by_modality: dict[str, int] = {}
        images = 0
        for row in iter_validated(ds, report):
            tag = row["solution"].split(">", 1)[0].lstrip("<")
            by_modality[tag] = by_modality.get(tag, 0) + 1
            images += len(row["image"])
        s = report.summary()
        print(
            f"{split}: read {s['read']}, valid {s['valid']}, excluded by config {s['excluded']}, "
            f"skipped {s['skipped']}, images {images}"
        )
        print("  by modality: " + ", ".join(f"{k} {v}" for k, v in sorted(by_modality.items())))
        for reason, count in s["excluded_reasons"].items():
            print(f"  excluded for {reason}: {count}")
        for reason, count in s["reasons"].items():
            print(f"  skipped for {reason}: {count}")
        for example in s["examples"]:
            print(f"    {example}")
        failed |= s["skipped"] > 0
    return 1 if failed and args.strict else 0


def _take_samples(cfg: MedixConfig, split: str, limit: int):
    """Returns up to `limit` validated Samples of a split, read through Ray Data, and the read summary."""
    import ray

    from medix_ray.data.readers import read_samples_from_config, take_samples

    ds, report = read_samples_from_config(cfg.data, split)
    samples = take_samples(ds, report, limit)
    summary = report.summary()
    ray.shutdown()  # the engine below does not need the cluster; free its memory
    return samples, summary


def cmd_data_preview(args: argparse.Namespace) -> int:
    from medix_ray.data.output_format import OutputFormat
    from medix_ray.data.prompts import render_prompt
    from medix_ray.models import resolve_model
    from medix_ray.rollout.vllm_engine import load_prompt_renderer

    cfg = config_of(args)
    samples, _ = _take_samples(cfg, args.split, args.limit)
    renderer = load_prompt_renderer(resolve_model(cfg.model.policy), cfg.model.trust_remote_code)
    fmt = OutputFormat.from_config(cfg)
    for sample in samples:
        print(f"--- {sample.id} ({sample.modality}, {len(sample.images)} image(s)) reference: {sample.answer}")
        print(render_prompt(sample, renderer, fmt))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from medix_ray.data.images import PixelBounds
    from medix_ray.data.output_format import OutputFormat
    from medix_ray.models import resolve_model
    from medix_ray.rollout.vllm_engine import VLLMGenerator

    cfg = config_of(args)
    samples, summary = _take_samples(cfg, args.split, args.limit)
    if summary["skipped"]:
        logger.warning("skipped %d bad samples: %s", summary["skipped"], summary["reasons"])
    generator = VLLMGenerator(
        resolve_model(cfg.model.policy),
        cfg.rollout,
        OutputFormat.from_config(cfg),
        PixelBounds.from_config(cfg.data),
        cfg.model,
    )
    start = time.monotonic()
    generations = generator.generate(samples, seed=cfg.trainer.seed)
    elapsed = time.monotonic() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tokens = 0
    with open(args.out, "w", encoding="utf-8") as f:
        for sample, gen in zip(samples, generations, strict=True):
            for k, (text, reason, ntok) in enumerate(
                zip(gen.responses, gen.finish_reasons, gen.response_tokens, strict=True)
            ):
                tokens += ntok
                f.write(
                    json.dumps(
                        {
                            "id": sample.id,
                            "response_index": k,
                            "question": sample.problem,
                            "response": text,
                            "reference": sample.solution,
                            "modality": sample.modality,
                            "images": len(sample.images),
                            "finish_reason": reason,
                            "response_tokens": ntok,
                        }
                    )
                    + "\n"
                )
    n_resp = sum(len(g.responses) for g in generations)
    for sample, gen in list(zip(samples, generations, strict=True))[: args.show]:
        print(
            f"\n[{sample.id}] {sample.problem}\n  reference: {sample.solution}\n  response:  {gen.responses[0][:300]!r}"
        )
    print(
        f"\ngenerated {n_resp} responses for {len(samples)} samples ({tokens} tokens) in {elapsed:.1f} s "
        f"= {tokens / max(elapsed, 1e-9):.0f} tokens/s; wrote {args.out}"
    )
    return 0


def register_data(sub: Any) -> None:
    data = sub.add_parser("data", help="datasets").add_subparsers(dest="action", required=True)
    validate = data.add_parser("validate", help="read a dataset through Ray Data and report its validation")
    validate.add_argument("--split", choices=("train", "test", "all"), default="all")
    validate.add_argument("--strict", action="store_true", help="exit 1 if any sample was skipped")
    add_config_args(validate)
    validate.set_defaults(func=cmd_data_validate)
    preview = data.add_parser("preview", help="print rendered prompts")
    preview.add_argument("--split", choices=("train", "test"), default="test")
    preview.add_argument("--limit", type=int, default=2)
    add_config_args(preview)
    preview.set_defaults(func=cmd_data_preview)


def register_generate(sub: Any) -> None:
    gen = sub.add_parser("generate", help="sample responses for a dataset split with vLLM, to JSONL")
    gen.add_argument("--split", choices=("train", "test"), default="test")
    gen.add_argument("--limit", type=int, default=8, help="number of samples (0: all)")
    gen.add_argument("--out", type=Path, default=Path("runs/generate/generations.jsonl"))
    gen.add_argument("--show", type=int, default=4, help="print this many samples' first response")
    add_config_args(gen)
    gen.set_defaults(func=cmd_generate)

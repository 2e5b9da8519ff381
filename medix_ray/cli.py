"""`medix-ray`: the command line.

    medix-ray models list
    medix-ray models prepare smollm2-135m-instruct
    medix-ray config show --config configs/tiny_cpu.yaml rollout.n=8
    medix-ray data validate --config configs/tiny_cpu.yaml
    medix-ray data preview --config configs/tiny_vlm_cpu.yaml --limit 2
    medix-ray generate --config configs/tiny_cpu.yaml --limit 8 --out runs/demo/generations.jsonl
    medix-ray score runs/demo/generations.jsonl runs/demo/scored.jsonl --config configs/tiny_cpu.yaml
    medix-ray export runs/tiny_cpu/checkpoints/learner/checkpoint_<time> runs/tiny_cpu/hf
    medix-ray train --config configs/tiny_cpu.yaml
    medix-ray train --config configs/paper/dapo_8b.yaml --dry-run --assume-cluster CPU=64,GPU=8
    medix-ray evaluate --model smollm2-135m-instruct --tasks llm --data-dir tests/eval/fixtures
    medix-ray evaluate --model MBZUAI/MediX-R1-8B --tasks all --judge http://judge:8000/v1 --protocol both

Every command that takes `--config` also takes `key=value` overrides after its options.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from pathlib import Path

from medix_ray.config import ConfigError, MedixConfig, load_config, to_yaml
from medix_ray.data.readers import DataSourceError
from medix_ray.data.schema import SampleError
from medix_ray.eval.pipeline import EvalInputError
from medix_ray.eval.report import UnsafeNameError
from medix_ray.eval.tasks import TaskDataError
from medix_ray.learner.export import CheckpointError
from medix_ray.models import ModelUnavailableError
from medix_ray.rewards.http_client import RewardServiceError
from medix_ray.rewards.judge import JudgeUnavailableError
from medix_ray.rewards.local import RewardInputError
from medix_ray.trainer.metrics import MetricsFileError

logger = logging.getLogger("medix_ray")


# Errors of the user's input (config, data, models, checkpoints): one line on stderr and exit 2, no traceback.
USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    SampleError,
    DataSourceError,
    ModelUnavailableError,
    FileNotFoundError,
    RewardInputError,
    JudgeUnavailableError,
    RewardServiceError,
    CheckpointError,
    EvalInputError,
    TaskDataError,
    UnsafeNameError,
    MetricsFileError,
)


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="YAML config file (defaults apply without one)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. rollout.n=8")


def _config(args: argparse.Namespace) -> MedixConfig:
    return load_config(args.config, args.overrides)


def _add_console_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show every library's and worker's output (default: they go to log files in the run folder)",
    )


def _start_console(args: argparse.Namespace, log_dir: Path) -> None:
    from medix_ray.console import Console

    Console(log_dir, verbose=args.verbose).start()


def cmd_models_list(args: argparse.Namespace) -> int:
    from medix_ray.models import MODELS, ModelUnavailableError, is_prepared, model_dir

    print(f"{'name':<24} {'kind':<10} {'ready':<6} {'package':<22} path")
    for name, spec in MODELS.items():
        try:
            where = str(model_dir(name))
        except ModelUnavailableError as exc:
            where = f"unavailable: {exc}"
        print(f"{name:<24} {spec.kind:<10} {'yes' if is_prepared(name) else 'no':<6} {spec.package or '-':<22} {where}")
    print("\nAny other name is used as a local folder or a Hugging Face hub id.")
    return 0


def cmd_models_prepare(args: argparse.Namespace) -> int:
    from medix_ray.models import MODELS, prepare_model

    names = list(MODELS) if args.names == ["all"] else args.names
    for name in names:
        start = time.monotonic()
        path = prepare_model(name)
        print(f"{name}: {path} ({time.monotonic() - start:.1f} s)")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    print(to_yaml(_config(args)), end="")
    return 0


def cmd_data_validate(args: argparse.Namespace) -> int:
    from medix_ray.data.prompt_length import PromptLengthCheck
    from medix_ray.data.readers import iter_validated, read_samples_from_config

    cfg = _config(args)
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

    cfg = _config(args)
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

    cfg = _config(args)
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


@contextlib.contextmanager
def _scorer_fn(cfg: MedixConfig):
    """Yields the in-process scoring function for a config (starting a local judge if needed)."""
    from medix_ray.rewards.local import open_scorer

    with open_scorer(cfg) as scorer:
        yield scorer.score_sync


def cmd_score(args: argparse.Namespace) -> int:
    from collections import Counter

    from tqdm import tqdm

    from medix_ray.rewards.local import read_items

    cfg = _config(args)
    _start_console(args, args.output.parent / f"{args.output.stem}.logs")
    records, items = read_items(args.input)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    statuses: Counter[str] = Counter()
    scored, total = 0, 0.0
    if args.url:
        from medix_ray.rewards.http_client import RewardServiceClient

        scorer_context = contextlib.nullcontext(RewardServiceClient(args.url, token_env=cfg.serve.auth_token_env).score)
    else:
        scorer_context = _scorer_fn(cfg)
    setup_start = time.monotonic()
    with scorer_context as score_fn, open(args.output, "w", encoding="utf-8") as out:
        start = time.monotonic()  # after the judge and embedder are up
        bar = tqdm(total=len(items), desc="scoring", unit="item")
        for lo in range(0, len(items), args.batch_size):
            batch = items[lo : lo + args.batch_size]
            for record, bd in zip(records[lo : lo + args.batch_size], score_fn(batch), strict=True):
                row = dict(record)
                row.update({k: v for k, v in bd.to_dict().items() if k != "id"})
                out.write(json.dumps(row) + "\n")
                statuses.update(f"{k}={v}" for k, v in bd.status.items())
                if bd.scored:
                    scored += 1
                    total += bd.overall
            bar.update(len(batch))
        bar.close()
    elapsed = time.monotonic() - start
    print(
        f"scored {scored}/{len(items)} items ({len(items) - scored} unscored, see status) in {elapsed:.1f} s "
        f"(+{start - setup_start:.1f} s start-up); "
        f"mean overall {total / max(scored, 1):.4f}; wrote {args.output}"
    )
    for key, count in sorted(statuses.items()):
        print(f"  {key}: {count}")
    return 0


def cmd_serve_rewards(args: argparse.Namespace) -> int:
    import importlib

    cfg = _config(args)
    _start_console(args, args.log_dir)
    # The one place the library reaches the application layer: the CLI dispatches to the Serve app.
    reward_app = importlib.import_module("deployments.reward_app")
    url = reward_app.start_reward_service(cfg, address=args.address)
    print(
        f"reward service ready: POST {url}/v1/rewards, GET {url}/healthz, docs {url}/docs (Ctrl-C stops it)", flush=True
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        serve.shutdown()
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from medix_ray.trainer.plan import parse_cluster
    from medix_ray.trainer.run import dry_run, run_training

    cfg = _config(args)
    if args.dry_run:
        try:
            cluster = parse_cluster(args.assume_cluster) if args.assume_cluster else None
        except ValueError as exc:
            raise ConfigError(f"--assume-cluster: {exc}") from exc
        return 1 if dry_run(cfg, address=args.address, cluster=cluster) else 0
    _start_console(args, Path(cfg.trainer.output_dir) / "logs")
    try:
        summary = run_training(cfg, address=args.address, force=args.force)
    except KeyboardInterrupt:
        print("medix-ray: interrupted; checkpoint written, run again to resume", file=sys.stderr)
        return 130
    if args.min_reward_gain is not None and summary.get("reward_gain", float("-inf")) < args.min_reward_gain:
        print(
            f"medix-ray: error: reward gain {summary.get('reward_gain')} is below --min-reward-gain "
            f"{args.min_reward_gain}",
            file=sys.stderr,
        )
        return 3
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from medix_ray.learner.export import export_checkpoint

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    out = export_checkpoint(args.checkpoint, args.out_dir, base_model=args.base_model, dtype=dtype)
    print(f"exported {args.checkpoint} to {out} (loads with transformers' from_pretrained and vLLM)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from medix_ray.eval.pipeline import PHASES
    from medix_ray.eval.run import evaluate

    overrides = list(args.overrides)
    for flag, key in (
        ("tasks", "tasks"),
        ("judge", "judge"),
        ("data_dir", "data_dir"),
        ("limit", "limit"),
        ("output_dir", "output_dir"),
        ("protocol", "protocol"),
    ):
        value = getattr(args, flag)
        if value is not None:
            value = "[" + ",".join(value.split(",")) + "]" if key == "tasks" else value
            overrides.append(f"eval.{key}={value}")
    cfg = load_config(args.config, overrides)
    _start_console(args, Path(cfg.eval.output_dir) / "logs")
    phases = args.phases.split(",") if args.phases else list(PHASES)
    try:
        evaluate(cfg, args.model, address=args.address, phases=phases)
    except KeyboardInterrupt:
        print("medix-ray: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medix-ray", description="Ray-native medical RL for vision-language models")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="offline models").add_subparsers(dest="action", required=True)
    models.add_parser("list", help="list the named offline models").set_defaults(func=cmd_models_list)
    prep = models.add_parser("prepare", help="build named offline models into $MEDIX_RAY_HOME")
    prep.add_argument("names", nargs="+", help="model names, or 'all'")
    prep.set_defaults(func=cmd_models_prepare)

    config = sub.add_parser("config", help="configuration").add_subparsers(dest="action", required=True)
    show = config.add_parser("show", help="print the resolved config")
    _add_config_args(show)
    show.set_defaults(func=cmd_config_show)

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="action", required=True)
    validate = data.add_parser("validate", help="read a dataset through Ray Data and report its validation")
    validate.add_argument("--split", choices=("train", "test", "all"), default="all")
    validate.add_argument("--strict", action="store_true", help="exit 1 if any sample was skipped")
    _add_config_args(validate)
    validate.set_defaults(func=cmd_data_validate)
    preview = data.add_parser("preview", help="print rendered prompts")
    preview.add_argument("--split", choices=("train", "test"), default="test")
    preview.add_argument("--limit", type=int, default=2)
    _add_config_args(preview)
    preview.set_defaults(func=cmd_data_preview)

    gen = sub.add_parser("generate", help="sample responses for a dataset split with vLLM, to JSONL")
    gen.add_argument("--split", choices=("train", "test"), default="test")
    gen.add_argument("--limit", type=int, default=8, help="number of samples (0: all)")
    gen.add_argument("--out", type=Path, default=Path("runs/generate/generations.jsonl"))
    gen.add_argument("--show", type=int, default=4, help="print this many samples' first response")
    _add_config_args(gen)
    gen.set_defaults(func=cmd_generate)

    score = sub.add_parser("score", help="score responses (JSONL: id, question, response, reference) with the reward")
    score.add_argument("input", type=Path, help="input JSONL")
    score.add_argument("output", type=Path, help="output JSONL: the input fields plus the reward breakdown")
    score.add_argument("--batch-size", type=int, default=256)
    score.add_argument("--url", default=None, help="score through a running reward service instead of in-process")
    _add_config_args(score)
    _add_console_args(score)
    score.set_defaults(func=cmd_score)

    exp = sub.add_parser("export", help="write a learner checkpoint as a Hugging Face model folder")
    exp.add_argument("checkpoint", type=Path, help="a checkpoint_* folder of a training run")
    exp.add_argument("out_dir", type=Path)
    exp.add_argument("--base-model", default=None, help="override the base model recorded in the checkpoint")
    exp.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    exp.set_defaults(func=cmd_export)

    train = sub.add_parser("train", help="run RL training (rollout fleet, reward ensemble, learner group)")
    train.add_argument("--address", default=None, help="Ray cluster address (default: start a local cluster)")
    train.add_argument("--dry-run", action="store_true", help="print the resource plan, check it, and exit")
    train.add_argument(
        "--assume-cluster", default=None, metavar="CPU=N,GPU=M", help="with --dry-run: check against these resources"
    )
    train.add_argument(
        "--force", action="store_true", help="resume even if the config changes keys the checkpoint was trained with"
    )
    train.add_argument(
        "--min-reward-gain", type=float, default=None, help="exit 3 unless last-5 minus first-5 mean reward reaches it"
    )
    _add_config_args(train)
    _add_console_args(train)
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="the 18-benchmark LLM-as-judge evaluation: generate, judge, score, report")
    ev.add_argument("--model", required=True, help="candidate: an offline model name, a local folder or a hub id")
    ev.add_argument("--tasks", default=None, help="all | llm | vlm | comma-separated task names (eval.tasks)")
    ev.add_argument(
        "--judge",
        default=None,
        help="an OpenAI-compatible /v1 URL, a local model run in-process, or serve:<app> for the judge of a "
        "running reward application on the --address cluster, e.g. serve:medix-rewards (eval.judge)",
    )
    ev.add_argument("--data-dir", default=None, help="local copies of the datasets, <dir>/<task>/ (eval.data_dir)")
    ev.add_argument("--limit", type=int, default=None, help="first N items per task (eval.limit)")
    ev.add_argument("--output-dir", default=None, help="results folder; re-running continues there (eval.output_dir)")
    ev.add_argument("--protocol", default=None, choices=("paper", "independent", "both"), help="judge protocol")
    ev.add_argument("--phases", default=None, help="comma-separated subset of generate,judge,score,report")
    ev.add_argument("--address", default=None, help="Ray cluster address (default: start a local cluster)")
    _add_config_args(ev)
    _add_console_args(ev)
    ev.set_defaults(func=cmd_evaluate)

    srv = sub.add_parser("serve-rewards", help="run the reward service (Ray Serve) until Ctrl-C")
    srv.add_argument("--address", default=None, help="Ray cluster address (default: start a local cluster)")
    _add_config_args(srv)
    _add_console_args(srv)
    srv.add_argument("--log-dir", type=Path, default=Path("runs/serve_rewards/logs"), help="where the logs go")
    srv.set_defaults(func=cmd_serve_rewards)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        print(f"medix-ray: error: {exc}{_logs_hint()}", file=sys.stderr)
        return 2
    except Exception as exc:
        hint = _logs_hint()
        if not hint:
            raise
        logger.error("medix-ray %s failed", args.command, exc_info=True)  # the traceback, in driver.log
        print(f"medix-ray: error: {args.command} failed: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        return 1


def _logs_hint() -> str:
    from medix_ray.console import current

    log_dir = current().log_dir
    return f" (logs: {log_dir})" if log_dir is not None else ""


if __name__ == "__main__":
    sys.exit(main())

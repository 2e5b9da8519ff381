"""`medix-ray train` (the RL controller, or its resource plan with --dry-run) and `medix-ray export` (to HF)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from medix_ray.commands.common import add_config_args, add_console_args, config_of, start_console
from medix_ray.config import ConfigError


def cmd_train(args: argparse.Namespace) -> int:
    from medix_ray.trainer.plan import parse_cluster
    from medix_ray.trainer.run import dry_run, run_training

    cfg = config_of(args)
    if args.dry_run:
        try:
            cluster = parse_cluster(args.assume_cluster) if args.assume_cluster else None
        except ValueError as exc:
            raise ConfigError(f"--assume-cluster: {exc}") from exc
        return 1 if dry_run(cfg, address=args.address, cluster=cluster) else 0
    start_console(args, Path(cfg.trainer.output_dir) / "logs")
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


def register_export(sub: Any) -> None:
    exp = sub.add_parser("export", help="write a learner checkpoint as a Hugging Face model folder")
    exp.add_argument("checkpoint", type=Path, help="a checkpoint_* folder of a training run")
    exp.add_argument("out_dir", type=Path)
    exp.add_argument("--base-model", default=None, help="override the base model recorded in the checkpoint")
    exp.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    exp.set_defaults(func=cmd_export)


def register_train(sub: Any) -> None:
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
    add_config_args(train)
    add_console_args(train)
    train.set_defaults(func=cmd_train)

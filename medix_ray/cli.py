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
import logging
import sys

from medix_ray.commands.data import register_data, register_generate
from medix_ray.commands.evaluate import register_evaluate
from medix_ray.commands.models import register_config, register_models
from medix_ray.commands.rewards import register_score, register_serve_rewards
from medix_ray.commands.train import register_export, register_train
from medix_ray.config import ConfigError
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

# The subcommands in the order `--help` lists them; each adds its own arguments (medix_ray/commands/).
SUBCOMMANDS = (
    register_models,
    register_config,
    register_data,
    register_generate,
    register_score,
    register_export,
    register_train,
    register_evaluate,
    register_serve_rewards,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medix-ray", description="Ray-native medical RL for vision-language models")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in SUBCOMMANDS:
        register(sub)
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

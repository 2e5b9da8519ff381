"""`medix-ray evaluate`: the 18-benchmark LLM-as-judge evaluation (medix_ray/eval/, docs/evaluation.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from medix_ray.commands.common import add_config_args, add_console_args, start_console
from medix_ray.config import load_config

# The command's flags and the eval.<key> each one sets.
FLAG_KEYS = (
    ("tasks", "tasks"),
    ("judge", "judge"),
    ("data_dir", "data_dir"),
    ("limit", "limit"),
    ("output_dir", "output_dir"),
    ("protocol", "protocol"),
)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from medix_ray.eval.pipeline import PHASES
    from medix_ray.eval.run import evaluate

    overrides = list(args.overrides)
    for flag, key in FLAG_KEYS:
        value = getattr(args, flag)
        if value is not None:
            value = "[" + ",".join(value.split(",")) + "]" if key == "tasks" else value
            overrides.append(f"eval.{key}={value}")
    cfg = load_config(args.config, overrides)
    start_console(args, Path(cfg.eval.output_dir) / "logs")
    phases = args.phases.split(",") if args.phases else list(PHASES)
    try:
        evaluate(cfg, args.model, address=args.address, phases=phases)
    except KeyboardInterrupt:
        print("medix-ray: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    return 0


def register_evaluate(sub: Any) -> None:
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
    add_config_args(ev)
    add_console_args(ev)
    ev.set_defaults(func=cmd_evaluate)

"""What every `medix-ray` subcommand shares: the config options, the console options, and the console start."""

from __future__ import annotations

import argparse
from pathlib import Path

from medix_ray.config import MedixConfig, load_config


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="YAML config file (defaults apply without one)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. rollout.n=8")


def config_of(args: argparse.Namespace) -> MedixConfig:
    """Returns the config of `--config` with the command line's `key=value` overrides."""
    return load_config(args.config, args.overrides)


def add_console_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show every library's and worker's output (default: they go to log files in the run folder)",
    )


def start_console(args: argparse.Namespace, log_dir: Path) -> None:
    from medix_ray.console import Console

    Console(log_dir, verbose=args.verbose).start()

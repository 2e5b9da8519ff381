"""`medix-ray models list | prepare` (the offline models) and `medix-ray config show` (the resolved config)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from medix_ray.commands.common import add_config_args, config_of
from medix_ray.config import to_yaml


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
    print(to_yaml(config_of(args)), end="")
    return 0


def register_models(sub: Any) -> None:
    models = sub.add_parser("models", help="offline models").add_subparsers(dest="action", required=True)
    models.add_parser("list", help="list the named offline models").set_defaults(func=cmd_models_list)
    prep = models.add_parser("prepare", help="build named offline models into $MEDIX_RAY_HOME")
    prep.add_argument("names", nargs="+", help="model names, or 'all'")
    prep.set_defaults(func=cmd_models_prepare)


def register_config(sub: Any) -> None:
    config = sub.add_parser("config", help="configuration").add_subparsers(dest="action", required=True)
    show = config.add_parser("show", help="print the resolved config")
    add_config_args(show)
    show.set_defaults(func=cmd_config_show)

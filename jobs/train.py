"""`ray job submit --working-dir . -- python jobs/train.py --config configs/paper/dapo_8b.yaml [key=value ...]`

Runs the MediX-R1 training controller inside the cluster the job was submitted to (the same code
as `medix-ray train`). `--dry-run` prints the resource plan and checks it against that cluster;
`--force` resumes a run folder even if the config changes keys its checkpoint was trained with. Bad
input (config, data, checkpoint) is one error line and exit code 2, as in the CLI.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from medix_ray.cli import USER_ERRORS
from medix_ray.config import load_config
from medix_ray.console import Console
from medix_ray.trainer.run import dry_run, run_training


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--force", action="store_true", help="resume even if the config changes the math")
    parser.add_argument("--verbose", action="store_true", help="worker and library output in the job log too")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.overrides)
        if args.dry_run:
            return 1 if dry_run(cfg, address="auto") else 0
        Console(Path(cfg.trainer.output_dir) / "logs", verbose=args.verbose).start()
        run_training(cfg, address="auto", progress=False, force=args.force)
    except USER_ERRORS as exc:
        print(f"jobs/train.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

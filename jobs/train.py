"""`ray job submit --working-dir . -- python jobs/train.py --config configs/paper/dapo_8b.yaml [key=value ...]`

Runs the MediX-R1 training controller inside the cluster the job was submitted to (the same code
as `medix-ray train`). `--dry-run` prints the resource plan and checks it against that cluster.
"""

from __future__ import annotations

import argparse
import logging
import sys

from medix_ray.config import load_config
from medix_ray.trainer.run import dry_run, run_training


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        return 1 if dry_run(cfg, address="auto") else 0
    run_training(cfg, address="auto", progress=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

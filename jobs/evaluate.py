"""`ray job submit --working-dir . -- python jobs/evaluate.py --model MBZUAI/MediX-R1-8B [key=value ...]`

Runs the 18-benchmark evaluation inside the cluster the job was submitted to (the same code as
`medix-ray evaluate`): generate with vLLM actors on Ray Data, judge, score, report. Re-submitting
with the same `eval.output_dir` continues where the last run stopped. Examples of overrides:
`eval.tasks=[llm]`, `eval.judge=http://judge.svc:8000/v1`, `eval.data_dir=/mnt/medix-eval`,
`eval.gen_num_gpus=1`, `eval.protocol=both`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from medix_ray.config import load_config
from medix_ray.console import Console
from medix_ray.eval.pipeline import PHASES
from medix_ray.eval.run import evaluate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--config", default=None)
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--verbose", action="store_true", help="worker and library output in the job log too")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, args.overrides)
    Console(Path(cfg.eval.output_dir) / "logs", verbose=args.verbose).start()
    evaluate(cfg, args.model, address="auto", phases=args.phases.split(","), progress=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

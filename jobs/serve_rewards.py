"""`ray job submit --working-dir . -- python jobs/serve_rewards.py --config configs/serve/rewards_cpu.yaml`

Deploys the reward service onto the cluster the job runs in and keeps it up (Serve outlives the
job's driver only with `--detach`; without it the service runs until the job is stopped).
"""

from __future__ import annotations

import argparse
import logging
import time

from deployments.reward_app import start_reward_service
from medix_ray.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--detach", action="store_true", help="deploy and exit, leaving the service running")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    cfg = load_config(args.config, args.overrides)
    url = start_reward_service(cfg, address="auto")
    print(f"reward service ready at {url}/v1/rewards", flush=True)
    if not args.detach:
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()

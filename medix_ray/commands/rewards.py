"""`medix-ray score` (a JSONL of responses through the reward) and `medix-ray serve-rewards` (the Serve app)."""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path
from typing import Any

from medix_ray.commands.common import add_config_args, add_console_args, config_of, start_console
from medix_ray.config import MedixConfig


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

    cfg = config_of(args)
    start_console(args, args.output.parent / f"{args.output.stem}.logs")
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
    cfg = config_of(args)
    start_console(args, args.log_dir)
    # An entry point reaching the application layer (docs/architecture.md): the CLI dispatches to the Serve app.
    from deployments.reward_app import start_reward_service

    url = start_reward_service(cfg, address=args.address)
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


def register_score(sub: Any) -> None:
    score = sub.add_parser("score", help="score responses (JSONL: id, question, response, reference) with the reward")
    score.add_argument("input", type=Path, help="input JSONL")
    score.add_argument("output", type=Path, help="output JSONL: the input fields plus the reward breakdown")
    score.add_argument("--batch-size", type=int, default=256)
    score.add_argument("--url", default=None, help="score through a running reward service instead of in-process")
    add_config_args(score)
    add_console_args(score)
    score.set_defaults(func=cmd_score)


def register_serve_rewards(sub: Any) -> None:
    srv = sub.add_parser("serve-rewards", help="run the reward service (Ray Serve) until Ctrl-C")
    srv.add_argument("--address", default=None, help="Ray cluster address (default: start a local cluster)")
    add_config_args(srv)
    add_console_args(srv)
    srv.add_argument("--log-dir", type=Path, default=Path("runs/serve_rewards/logs"), help="where the logs go")
    srv.set_defaults(func=cmd_serve_rewards)

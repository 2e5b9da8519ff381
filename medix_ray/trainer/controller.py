"""The RL controller: the MediX-R1 training loop as a readable recipe over the Ray actor system.

One step:
  1. take prompts from the Ray Data stream (more rounds while dynamic sampling drops groups);
  2. roll out n responses per prompt on the vLLM rollout fleet (Ray Serve);
  3. score them with the composite-reward ensemble (Ray Serve handle); unscored ones (judge
     failure) are counted and left out of the update;
  4. shape (DAPO overlong penalty), filter groups, compute group advantages;
  5. update the learner group (Ray Train + DeepSpeed): k mini-batches;
  6. every `sync_interval` steps, broadcast the weights to the fleet (gloo on CPU, NCCL on GPU);
  7. every `val_interval` steps, validate on the test split; every `checkpoint_interval`, save.

    trainer = Trainer(load_config("configs/tiny_cpu.yaml"))
    summary = trainer.run()           # resumes from the output directory's last checkpoint

With `trainer.mode: async` the fleet and the reward do not wait for the learner: a rollout driver
(rollout_driver.py) keeps prompts in flight group by group and scores each group as it finishes,
the learner trains on batches of finished groups no staler than `trainer.max_staleness` versions,
with the rollout engine's log-probs as the behaviour policy (`algorithm.tis_cap`), and pushes the
weights every `sync_interval` updates. A push lets the requests in flight finish on the old
weights (they keep that version's tag); new requests wait for the load (docs/training.md).

A replica that dies is replaced by Serve and re-synced when it refuses a request as stale; a
learner worker that dies ends the learner group, which restarts from the last checkpoint (with
the data cursor), up to `trainer.max_restarts` times. Ctrl-C saves a checkpoint and exits.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medix_ray.algorithms.advantages import group_advantages
from medix_ray.algorithms.sampling import filter_groups, overlong_penalty
from medix_ray.cluster import local_dashboard, worker_env
from medix_ray.config import MedixConfig, to_yaml
from medix_ray.console import current as current_console
from medix_ray.data.images import PixelBounds
from medix_ray.data.output_format import OutputFormat
from medix_ray.data.prompt_length import PromptLengthCheck
from medix_ray.data.schema import Sample
from medix_ray.rewards.composite import COMPONENTS, RewardBreakdown, RewardItem, component_metric
from medix_ray.rollout.fleet import Rollout
from medix_ray.trainer.timeline import Timeline, plot_timeline

logger = logging.getLogger(__name__)


@dataclass
class ScoredGroup:
    """The trajectory record of one prompt's group, from rollout through reward to the learner batch: the
    rollout (sample, prompt token ids, each response's token ids, engine log-probs, policy version), each
    response's reward (None: unscored) and typed breakdown, and, once trained on, its advantages."""

    rollout: Rollout
    rewards: list[float | None]  # composite reward + overlong shaping; the advantage's input
    breakdowns: list[RewardBreakdown]
    advantages: list[float] | None = None  # set by the update that trains on the group
    status: str = "kept"  # kept (trained on) | filtered (dynamic sampling) | stale (async: too old)
    rollout_s: float = 0.0  # async mode: this group's generation and scoring times
    reward_s: float = 0.0

    @property
    def valid(self) -> list[bool]:
        return [r is not None for r in self.rewards]


@dataclass
class StepResult:
    metrics: dict[str, float]
    groups: list[ScoredGroup] = field(default_factory=list)


class Interrupted(Exception):
    """Ctrl-C during a run; the checkpoint has been written."""


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def trim_groups(groups: int, n: int, unit: int) -> int:
    """Returns the most of `groups` groups (n rows each) whose rows split evenly into `unit` shares."""
    while groups > 0 and (groups * n) % unit:
        groups -= 1
    return groups


class Trainer:
    def __init__(self, cfg: MedixConfig, *, address: str | None = None, num_cpus: int | None = None):
        from medix_ray.trainer.plan import batch_problems

        problems = batch_problems(cfg)
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))
        self.cfg = cfg
        self.address = address
        self.num_cpus = num_cpus
        self.out = Path(cfg.trainer.output_dir).absolute()
        self.format = OutputFormat.from_config(cfg)
        self.bounds = PixelBounds.from_config(cfg.data)
        self.step = 0
        self.version = 0  # learner updates applied
        self.synced_version = 0  # the version the fleet serves
        self.restarts = 0
        self.counters = {"unscored_responses": 0, "rollout_retries": 0, "skipped_updates": 0, "stale_groups": 0}
        self._started = False
        # One learner call at a time: in async mode a rollout thread may re-sync a restarted replica.
        self._learner_lock = threading.RLock()
        self.driver = None  # async mode's RolloutDriver
        self._retries_seen = 0
        self.timeline = Timeline(self.out / "timeline.jsonl")  # who is busy when (timeline.png)

    # -- setup ---------------------------------------------------------------------------
    def start(self) -> None:
        import ray
        from ray import serve

        from deployments.reward_app import build_reward_app
        from deployments.rollout_app import build_rollout_app
        from medix_ray.data.readers import read_samples_from_config, take_samples
        from medix_ray.models import resolve_model
        from medix_ray.rollout.fleet import RolloutFleet
        from medix_ray.rollout.vllm_engine import load_prompt_renderer
        from medix_ray.trainer.stream import PromptStream

        console = current_console()
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
        if not ray.is_initialized():
            env = worker_env()
            num_cpus = self.num_cpus
            if self.address is None and num_cpus is None and not torch.cuda.is_available():
                num_cpus = local_cpus(cfg)
            local = {"include_dashboard": local_dashboard()} if self.address is None else {}
            ray.init(
                address=self.address,
                num_cpus=num_cpus,
                runtime_env={"env_vars": env},
                **local,
                **console.ray_init_kwargs(),
            )
        console.quiet_libraries()
        console.link_ray_logs()
        from medix_ray.trainer.plan import resource_plan

        problems = resource_plan(cfg).check(dict(ray.cluster_resources()))
        if problems:  # checked up front: an under-provisioned cluster stalls Ray Data or Serve silently
            raise ValueError("the Ray cluster cannot run this config: " + "; ".join(problems))
        self.policy_path = resolve_model(cfg.model.policy)
        self.renderer = load_prompt_renderer(self.policy_path, cfg.model.trust_remote_code)
        length_check = PromptLengthCheck.from_config(cfg)  # data.max_prompt_length, counted in the read report
        serve.start(
            http_options={"host": cfg.serve.host, "port": cfg.serve.port},
            logging_config=console.serve_logging_config(),
        )
        # The rollout fleet, the reward ensemble and the learner group start at the same time.
        t0 = time.monotonic()
        with ThreadPoolExecutor(3) as pool:
            rollout = pool.submit(
                serve.run, build_rollout_app(cfg, self.policy_path), name="medix-rollout", route_prefix=None
            )
            rewards = pool.submit(serve.run, build_reward_app(cfg), name="medix-rewards", route_prefix=None)
            learner = pool.submit(self._new_learner)
            self.fleet = RolloutFleet(rollout.result())
            self.rewards = rewards.result()
            state = learner.result()
        logger.info("rollout fleet, reward ensemble and learner group up in %.0f s", time.monotonic() - t0)
        self.fleet.on_stale = self._resync
        ds, self.read_report = read_samples_from_config(cfg.data, "train", length_check)
        self.stream = PromptStream(ds, self.read_report, seed=cfg.data.seed, shuffle=cfg.data.shuffle)
        if cfg.trainer.val_interval > 0 or cfg.trainer.val_before_train:
            test_ds, test_report = read_samples_from_config(cfg.data, "test", length_check)
            self.val_samples = take_samples(test_ds, test_report, cfg.trainer.val_samples)
        self._restore(state)
        self._started = True

    def _new_learner(self) -> dict[str, Any]:
        """Starts the learner group (resuming the run's last checkpoint); returns the checkpoint's client state."""
        from medix_ray.learner.group import LearnerGroup

        cfg = self.cfg
        self.learner = LearnerGroup(
            self.policy_path,
            cfg.learner,
            cfg.algorithm,
            storage_path=str(self.out / "checkpoints"),
            name="learner",
            temperature=cfg.rollout.temperature,
            norm_length=cfg.rollout.max_tokens,
            model_cfg=cfg.model,
            keep_checkpoints=cfg.trainer.keep_checkpoints,
        )
        return self.learner.start()

    def _restore(self, state: dict[str, Any]) -> None:
        """Takes the controller state from a checkpoint's client state, then syncs the fleet to the learner."""
        from medix_ray.sync.coordinator import WeightSync

        self.step = int(state.get("step", 0))
        self.version = int(state.get("version", self.step))
        self.counters.update(state.get("counters", {}))
        cursor = state.get("cursor", {})
        self._restore_stream(cursor)
        if self.step:
            logger.info("resumed at step %d (data cursor %s)", self.step, cursor)
        self.sync = WeightSync(self.learner, self.fleet, self.cfg.sync)
        self._push()
        if self.cfg.trainer.mode == "async":
            self._start_driver()

    def _restore_stream(self, cursor: dict[str, Any]) -> None:
        """Moves the prompt stream to a saved cursor; async mode's pending prompts (in flight when it was
        read) come again first."""
        self.stream.restore(cursor, pending=cursor.get("pending", []))

    def _start_driver(self) -> None:
        from medix_ray.trainer.rollout_driver import RolloutDriver

        t = self.cfg.trainer
        self.driver = RolloutDriver(
            self._produce,
            self._keep,
            self.stream,
            want=t.prompts_per_step,
            max_staleness=t.max_staleness,
            workers=t.prompts_per_step,
            synced_version=lambda: self.synced_version,
            base_version=self.version,
        )
        self.driver.start()

    def _stop_driver(self) -> None:
        if self.driver is not None:
            self.driver.stop()
            self.driver = None

    def _push(self):
        t0 = time.monotonic()
        with self._learner_lock, self.timeline.span("sync", "push", step=self.step, version=self.version):
            report = self.sync.push(self.version)
        self.synced_version = self.version
        if self.driver is not None:
            self.driver.notify()
        self.last_sync = report
        logger.info(
            "weights v%d synced to %d replicas in %.2f s%s",
            report.version,
            report.replicas,
            time.monotonic() - t0,
            " (checksums verified)" if report.verified else "",
        )
        return report

    def _resync(self) -> None:
        """A replica refused a request as stale (it restarted): form the group again and push."""
        logger.warning("a rollout replica holds stale weights; re-syncing version %d", self.synced_version)
        with self._learner_lock, self.timeline.span("sync", "resync", step=self.step, version=self.synced_version):
            self.sync.push(self.synced_version)

    # -- one step ------------------------------------------------------------------------
    def _sampling(self) -> dict[str, Any]:
        r = self.cfg.rollout
        return {"n": r.n, "temperature": r.temperature, "top_p": r.top_p, "top_k": r.top_k, "max_tokens": r.max_tokens}

    def _generate(self, samples: list[Sample], sampling: dict[str, Any], name: str, step: int) -> list[Rollout]:
        """Rolls out on the fleet; the timeline gets one span per replica that served a group."""
        start = self.timeline.now()
        rollouts = self.fleet.generate(samples, sampling, min_version=self.synced_version)
        end = self.timeline.now()
        for replica in sorted({ro.replica for ro in rollouts}):
            mine = [ro for ro in rollouts if ro.replica == replica]
            counts = {"groups": len(mine), "responses": sum(len(ro.responses) for ro in mine)}
            version = min(ro.version for ro in mine)
            lane = f"rollout/{replica}"
            self.timeline.record(
                "rollout", name, start, end, lane=lane, step=step, version=version, replica=replica, counts=counts
            )
        return rollouts

    def _score(self, rollouts: list[Rollout], name: str, step: int) -> list[ScoredGroup]:
        items = [
            RewardItem(f"{ro.sample.id}#{g}.{k}", ro.sample.problem, resp.text, ro.sample.solution)
            for g, ro in enumerate(rollouts)
            for k, resp in enumerate(ro.responses)
        ]
        counts = {"responses": len(items)}
        with self.timeline.span("reward", name, step=step, version=self.synced_version, counts=counts):
            breakdowns = self.rewards.score.remote(items).result(timeout_s=1800)
        a = self.cfg.algorithm
        groups, i = [], 0
        for ro in rollouts:
            bds = breakdowns[i : i + len(ro.responses)]
            i += len(ro.responses)
            shaping = [0.0] * len(ro.responses)
            if a.overlong_shaping:
                lengths = torch.tensor([len(resp.token_ids) for resp in ro.responses])
                penalty = overlong_penalty(lengths, self.cfg.rollout.max_tokens, a.overlong_buffer, a.overlong_penalty)
                shaping = penalty.tolist()
            rewards = [
                None if bd.overall is None else float(bd.overall) + p for bd, p in zip(bds, shaping, strict=True)
            ]
            groups.append(ScoredGroup(ro, rewards, bds))
        return groups

    def _produce(self, sample: Sample) -> ScoredGroup:
        """Async mode: one prompt's group, generated and scored at once (a rollout driver thread)."""
        t0 = time.monotonic()
        (rollout,) = self._generate([sample], self._sampling(), "generate", self.step + 1)
        t1 = time.monotonic()
        (group,) = self._score([rollout], "score", self.step + 1)
        group.rollout_s, group.reward_s = t1 - t0, time.monotonic() - t1
        return group

    def _keep(self, group: ScoredGroup) -> bool:
        scored = [r for r in group.rewards if r is not None]
        if len(scored) < 2:
            return False
        a = self.cfg.algorithm
        return bool(
            filter_groups(torch.tensor([scored]), a.dynamic_sampling, low=a.filter_low, high=a.filter_high).kept
        )

    def train_step(self) -> StepResult:
        if self.cfg.trainer.mode == "async":
            return self._train_step_async()
        cfg, a = self.cfg, self.cfg.algorithm
        want = cfg.trainer.prompts_per_step
        timing = {"rollout": 0.0, "reward": 0.0}
        kept: list[ScoredGroup] = []
        sampled: list[ScoredGroup] = []
        rounds = 0
        while len(kept) < want and rounds < max(1, a.max_sampling_rounds):
            rounds += 1
            ask = want - len(kept) if rounds == 1 else math.ceil((want - len(kept)) * cfg.trainer.oversample)
            samples = self.stream.take(ask)
            t0 = time.monotonic()
            rollouts = self._generate(samples, self._sampling(), "generate", self.step + 1)
            timing["rollout"] += time.monotonic() - t0
            t0 = time.monotonic()
            groups = self._score(rollouts, "score", self.step + 1)
            timing["reward"] += time.monotonic() - t0
            sampled.extend(groups)
            for g in groups:
                if self._keep(g):
                    kept.append(g)
                else:
                    g.status = "filtered"
            if a.dynamic_sampling == "none":
                break
        trimmed = trim_groups(
            min(len(kept), want), cfg.rollout.n, cfg.learner.mini_batches_per_step * cfg.learner.num_workers
        )
        for g in kept[trimmed:]:
            g.status = "filtered"
        kept = kept[:trimmed]
        metrics = self._rollout_metrics(sampled, kept, rounds, timing)
        return self._finish_step(kept, sampled, metrics)

    def _train_step_async(self) -> StepResult:
        """One update on a batch of finished groups from the rollout driver; the fleet keeps generating."""
        if self.driver is None or self.driver.stopped:  # a run or step after the last run ended
            if self.driver is not None:
                self._restore_stream(self.driver.cursor())
            self._start_driver()
        batch = self.driver.take(self.version)
        for g in batch.stale:
            g.status = "stale"
        for g in batch.filtered:
            g.status = "filtered"
        self.counters["stale_groups"] += len(batch.stale)
        timing = {
            "rollout": sum(g.rollout_s for g in batch.sampled),
            "reward": sum(g.reward_s for g in batch.sampled),
        }
        metrics = self._rollout_metrics(batch.sampled, batch.kept, 1, timing)
        lags = [self.version - g.rollout.version for g in batch.kept]
        metrics.update(
            {
                "groups/stale_dropped": float(len(batch.stale)),
                "time/wait_s": batch.waited_s,
                "policy/version_lag": sum(lags) / len(lags),
                "policy/version_lag_max": float(max(lags)),
            }
        )
        return self._finish_step(batch.kept, batch.sampled, metrics)

    def _finish_step(self, kept: list[ScoredGroup], sampled: list[ScoredGroup], metrics: dict[str, Any]) -> StepResult:
        """Updates on the kept groups (or counts a skipped update), then pushes every `sync_interval` steps."""
        cfg = self.cfg
        if kept:
            metrics.update(self._update(kept))
            self.version += 1
        else:
            self.counters["skipped_updates"] += 1
            metrics["update/skipped"] = 1.0
        self.step += 1
        if self.step % cfg.trainer.sync_interval == 0 and self.version != self.synced_version:
            t0 = time.monotonic()
            report = self._push()
            metrics["time/sync_s"] = time.monotonic() - t0
            metrics["sync/gb_per_s"] = report.gb_per_s
            metrics["sync/verified"] = float(report.verified)
        metrics["policy/version"] = float(self.version)
        return StepResult(metrics, sampled)

    def _rollout_metrics(
        self, sampled: list[ScoredGroup], kept: list[ScoredGroup], rounds: int, timing: dict[str, float]
    ) -> dict[str, float]:
        bds = [bd for g in sampled for bd in g.breakdowns]
        responses = [r for g in sampled for r in g.rollout.responses]
        unscored = sum(bd.overall is None for bd in bds)
        self.counters["unscored_responses"] += unscored
        self.counters["rollout_retries"] += self.fleet.retries - self._retries_seen  # counters survive resumes
        self._retries_seen = self.fleet.retries
        token_logps = [lp for r in responses for lp in r.logprobs]
        m: dict[str, Any] = {
            "reward/mean": _mean([bd.overall for bd in bds]),
            **{component_metric(c): _mean([getattr(bd, c) for bd in bds]) for c in COMPONENTS},
            "reward/shaped_mean": _mean([r for g in sampled for r in g.rewards]),
            "reward/unscored": float(unscored),
            "groups/sampled": float(len(sampled)),
            "groups/kept": float(len(kept)),
            "groups/rounds": float(rounds),
            "response/length_mean": _mean([float(len(r.token_ids)) for r in responses]),
            "response/truncated_fraction": _mean([float(r.truncated) for r in responses]),
            # The mean negative log-prob of the sampled tokens: a Monte Carlo estimate of the token entropy.
            "policy/entropy_est": -sum(token_logps) / len(token_logps) if token_logps else None,
            "policy/version_lag": float(self.version - min(g.rollout.version for g in sampled)) if sampled else 0.0,
            "time/rollout_s": timing["rollout"],
            "time/reward_s": timing["reward"],
        }
        return m

    def _update(self, kept: list[ScoredGroup]) -> dict[str, float]:
        from medix_ray.learner.batch import build_rollout_batch

        cfg = self.cfg
        n = cfg.rollout.n
        rewards = torch.tensor([[math.nan if r is None else r for r in g.rewards] for g in kept], dtype=torch.float32)
        valid = torch.tensor([g.valid for g in kept])
        adv = group_advantages(rewards, cfg.algorithm.advantage, valid=valid)
        for g, row in zip(kept, adv.tolist(), strict=True):
            g.advantages = row
        samples: list[Sample] = [g.rollout.sample for g in kept for _ in range(n)]
        response_ids = [r.token_ids or [self._eos()] for g in kept for r in g.rollout.responses]
        # The rollout's own prompt token ids, not a second rendering (tests/learner/test_rollout_batch.py)
        prompt_ids = [g.rollout.prompt_token_ids for g in kept for _ in range(n)]
        behaviour = None
        if cfg.trainer.mode == "async":  # the engine's log-probs: the behaviour policy (NaN: none, weight 1)
            behaviour = [r.logprobs if r.token_ids else [math.nan] for g in kept for r in g.rollout.responses]
        batch = build_rollout_batch(
            samples, prompt_ids, response_ids, adv.reshape(-1), self.renderer, self.bounds, behaviour_logp=behaviour
        )
        batch.loss_mask[~valid.reshape(-1)] = 0.0  # unscored responses take no part in the update
        t0 = time.monotonic()
        phase = {"step": self.step + 1, "version": self.version, "counts": {"groups": len(kept)}}
        with self._learner_lock:
            if cfg.learner.mini_batches_per_step > 1:
                with self.timeline.span("learner", "logprobs", **phase):
                    batch.old_logp = self.learner.compute_logprobs(batch)
            if cfg.algorithm.kl_coef > 0:
                with self.timeline.span("learner", "ref_logprobs", **phase):
                    batch.ref_logp = self.learner.compute_ref_logprobs(batch)
            with self.timeline.span("learner", "update", **phase):
                stats = self.learner.update(batch)
        off_policy = {}
        if behaviour is not None:
            off_policy = {
                "offpolicy/is_weight_mean": _mean([s["is_weight_mean"] for s in stats]),
                "offpolicy/is_truncated_fraction": _mean([s["is_truncated_fraction"] for s in stats]),
            }
        return {
            **off_policy,
            "time/update_s": time.monotonic() - t0,
            "update/loss": _mean([s["loss"] for s in stats]),
            "update/clip_fraction": _mean([s["clip_fraction"] for s in stats]),
            "update/ratio_mean": _mean([s["ratio_mean"] for s in stats]),
            "update/kl": _mean([s["kl"] for s in stats]),
            "update/grad_norm": _mean([s["grad_norm"] for s in stats]),
            "update/tokens": float(sum(s["tokens"] for s in stats)),
            "update/attention": stats[0]["attention"],  # the attention path (docs/learner.md)
            "update/micro_batches": float(sum(s["micro_batches"] for s in stats)),
            "update/over_budget_micro_batches": float(sum(s["over_budget"] for s in stats)),
            "update/advantage_abs_mean": float(adv[valid].abs().mean()) if bool(valid.any()) else 0.0,
        }

    def _eos(self) -> int:
        tok = getattr(self.renderer, "tokenizer", self.renderer)
        return int(tok.eos_token_id)

    # -- validation and checkpoints -----------------------------------------------------
    def validate(self) -> dict[str, float]:
        r = self.cfg.rollout
        sampling = {"n": 1, "temperature": r.val_temperature, "top_p": r.val_top_p, "max_tokens": r.max_tokens}
        t0 = time.monotonic()
        rollouts = self._generate(self.val_samples, sampling, "validate", self.step)
        groups = self._score(rollouts, "validate", self.step)
        bds = [bd for g in groups for bd in g.breakdowns]
        return {
            "val/reward_mean": _mean([bd.overall for bd in bds]),
            **{component_metric(c, "val"): _mean([getattr(bd, c) for bd in bds]) for c in COMPONENTS},
            "val/unscored": float(sum(bd.overall is None for bd in bds)),
            "time/val_s": time.monotonic() - t0,
        }

    def save(self) -> None:
        t0 = time.monotonic()
        # Async mode: the cursor also lists the prompts in flight (re-issued by a resumed run).
        cursor = self.driver.cursor() if self.driver is not None else self.stream.state()
        with self._learner_lock, self.timeline.span("learner", "save", step=self.step, version=self.version):
            self.learner.save_checkpoint(
                step=self.step, version=self.version, cursor=cursor, counters=dict(self.counters)
            )
        logger.info("checkpoint at step %d written in %.1f s", self.step, time.monotonic() - t0)

    # -- the loop ------------------------------------------------------------------------
    def run(self, progress: bool = True) -> dict[str, Any]:
        """Trains until `trainer.steps`; returns the summary (also written to summary.json)."""
        import json

        from tqdm import tqdm

        from medix_ray.learner.group import LearnerError
        from medix_ray.trainer.memory import PeakMemory
        from medix_ray.trainer.metrics import MetricsLog, plot_curves, read_metrics, window_means

        t = self.cfg.trainer
        started = time.monotonic()
        with PeakMemory() as memory:
            if not self._started:
                self.start()
            log = MetricsLog(self.out, resume_step=self.step)
            stop = _StopOnInterrupt()
            bar = tqdm(total=t.steps, initial=self.step, desc="medix-ray train", disable=not progress, unit="step")
            try:
                validated = self.step > 0 or any(r.get("step") == 0 for r in read_metrics(log.path))
                if t.val_before_train and not validated:  # once: a run resumed at step 0 has its row
                    val = self.validate()
                    log.write(0, val)
                    current_console().line(format_step(0, t.steps, val))
                while self.step < t.steps:
                    if stop.requested:
                        raise KeyboardInterrupt
                    t0 = time.monotonic()
                    try:
                        result = self.train_step()
                    except LearnerError as exc:
                        self._recover_learner(exc)
                        log.close()  # steps after the checkpoint will be trained again: drop their rows
                        log = MetricsLog(self.out, resume_step=self.step)
                        bar.n = self.step
                        bar.refresh()
                        continue
                    metrics = result.metrics
                    if t.val_interval and self.step % t.val_interval == 0:
                        metrics.update(self.validate())
                    if t.checkpoint_interval and self.step % t.checkpoint_interval == 0:
                        self.save()
                    metrics["time/step_s"] = time.monotonic() - t0
                    metrics["memory/peak_gib"] = memory.peak_gib
                    log.write(self.step, metrics)
                    log.write_rollouts(self.step, rollout_records(result.groups))
                    bar.update(1)
                    bar.set_postfix(reward=f"{metrics['reward/mean'] or 0:.3f}", kept=int(metrics["groups/kept"]))
                    current_console().line(format_step(self.step, t.steps, metrics))
                self.pause_rollouts()  # async: what is in flight is pending in the checkpoint
                if not t.checkpoint_interval or self.step % t.checkpoint_interval:
                    self.save()
            except KeyboardInterrupt:
                logger.warning("interrupted: writing a checkpoint at step %d", self.step)
                self.pause_rollouts()
                self.save()
                raise
            finally:
                stop.restore()
                bar.close()
                log.close()
        rows = read_metrics(log.path)
        summary: dict[str, Any] = {
            "steps": self.step,
            "policy_version": self.version,
            "seconds": time.monotonic() - started,
            "peak_memory_gib": memory.peak_gib,
            "restarts": self.restarts,
            **self.counters,
        }
        if rows:
            first, last = window_means(rows, "reward/mean", 5)
            summary.update(reward_first5=first, reward_last5=last, reward_gain=last - first)
            summary["plots"] = [str(p) for p in plot_curves(log.path, self.out)]
        self.timeline.close()
        if self.timeline.path.exists():
            summary.setdefault("plots", []).append(str(plot_timeline(self.timeline.path, self.out / "timeline.png")))
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        return summary

    def _recover_learner(self, exc: Exception) -> None:
        """Restarts the learner group from its last checkpoint after a worker died."""
        if self.restarts >= self.cfg.trainer.max_restarts:
            raise exc
        self.restarts += 1
        logger.error("learner failed (%s); restart %d from the last checkpoint", exc, self.restarts)
        self._stop_driver()  # its groups are discarded: the checkpoint's cursor and pending prompts rule
        self.learner.abort()
        self._restore(self._new_learner())

    def pause_rollouts(self) -> None:
        """Async mode: stops taking new prompts (groups in flight finish and are discarded, their prompts
        pending); the next `train_step` starts again from the cursor and the pending prompts, with the
        config as it is then. A run ends this way, so its last checkpoint stores the pending prompts."""
        if self.driver is not None:
            self.driver.stop()

    def shutdown(self) -> None:
        from ray import serve

        self._stop_driver()
        if getattr(self, "learner", None) is not None:
            try:
                self.learner.shutdown()
            except Exception:  # noqa: BLE001 - best effort at exit
                logger.exception("learner shutdown failed")
        for app in ("medix-rollout", "medix-rewards"):
            try:
                serve.delete(app)
            except Exception:  # noqa: BLE001
                logger.exception("could not delete Serve app %s", app)


class _StopOnInterrupt:
    """The first Ctrl-C asks the loop to stop after the current step (which then checkpoints); a second
    one interrupts at once. Only in the main thread (signal handlers can be set nowhere else)."""

    def __init__(self) -> None:
        import signal
        import threading

        self.requested = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("Ctrl-C: finishing this step, then writing a checkpoint (press again to stop at once)")

    def restore(self) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def format_step(step: int, total: int, m: dict[str, Any]) -> str:
    """Returns the one console line of a step: reward, kept groups, the time split and the sync.

    `step 3/15  reward 0.312 (fmt 0.10 llm 0.50)  kept 4/4 in 1 round  time 28.4 s: rollout 2.5 reward 1.0
    update 21.8 sync 0.6`; step 0 is the validation before training.
    """

    def num(key: str, fmt: str = ".3f") -> str:
        value = m.get(key)
        return "-" if value is None else format(value, fmt)

    if step == 0 or "reward/mean" not in m:
        return f"step {step}/{total}  validation reward {num('val/reward_mean')}  ({num('time/val_s', '.1f')} s)"
    parts = [
        f"step {step}/{total}",
        f"reward {num('reward/mean')} (fmt {num('reward/format', '.2f')} llm {num('reward/accuracy_llm', '.2f')})",
        f"kept {num('groups/kept', '.0f')}/{num('groups/sampled', '.0f')} in {num('groups/rounds', '.0f')} round(s)",
        f"time {num('time/step_s', '.1f')} s: rollout {num('time/rollout_s', '.1f')}"
        f" reward {num('time/reward_s', '.1f')} update {num('time/update_s', '.1f')} sync {num('time/sync_s', '.1f')}",
    ]
    if m.get("val/reward_mean") is not None:
        parts.append(f"val {num('val/reward_mean')}")
    return "  ".join(parts)


def rollout_records(groups: list[ScoredGroup]) -> list[dict[str, Any]]:
    """Returns one record per response: sample, policy version, status, text, length, reward, advantage and
    breakdown (rollouts.jsonl)."""
    return [
        {
            "sample_id": g.rollout.sample.id,
            "version": g.rollout.version,
            "status": g.status,
            "response": resp.text,
            "tokens": len(resp.token_ids),
            "finish_reason": resp.finish_reason,
            "reward": reward,
            "advantage": None if g.advantages is None else g.advantages[k],
            "breakdown": bd.to_dict(),
        }
        for g in groups
        for k, (resp, reward, bd) in enumerate(zip(g.rollout.responses, g.rewards, g.breakdowns, strict=True))
    ]


def local_cpus(cfg: MedixConfig) -> int:
    """Logical CPUs of a local CPU-only cluster: the plan's total, at least the machine's cores and 4
    (small machines are oversubscribed, docs/cpu_notes.md)."""
    from medix_ray.trainer.plan import resource_plan

    return max(os.cpu_count() or 1, 4, math.ceil(resource_plan(cfg).totals()["CPU"]))

"""The training recipe: MediX-R1's single-stage group RL over the Ray actor system, top to bottom.

    trainer = Trainer(load_config("configs/tiny_cpu.yaml"))
    summary = trainer.run()           # resumes from the output directory's last checkpoint

Set-up (`start`) brings up the roles at once: the rollout fleet (vLLM on Ray Serve), the reward
ensemble (Ray Serve), the learner group (Ray Train + DeepSpeed), then the weight sync between the
learner and the fleet, and the Ray Data prompt stream. One step (`train_step`):

  1. collect groups: sync mode (sync_step.py) takes prompts, rolls them out on the fleet, scores
     them and repeats while dynamic sampling drops groups; async mode (async_step.py) takes a batch
     of groups that the rollout driver finished while the learner was busy, none staler than
     `trainer.max_staleness` versions;
  2. learn (learn.py): group advantages, the learner batch from the replicas' own tokens and
     images, `learner.mini_batches_per_step` optimizer steps;
  3. every `trainer.sync_interval` steps, push the weights to the fleet (medix_ray/sync/);
  4. report (reporting.py); every `val_interval` steps validate, every `checkpoint_interval` save.

The records each step passes along are typed (medix_ray/trajectory.py). A replica that restarts is
re-synced by the weight sync itself; a learner worker that dies ends the learner group, which
restarts from the last checkpoint (lifecycle.py) up to `trainer.max_restarts` times. Ctrl-C
finishes the step, saves a checkpoint and exits.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medix_ray.config import MedixConfig, to_yaml
from medix_ray.console import current as current_console
from medix_ray.trainer.async_step import AsyncCollector
from medix_ray.trainer.learn import learn
from medix_ray.trainer.lifecycle import RunState, StopOnInterrupt
from medix_ray.trainer.reporting import format_step, rollout_metrics, rollout_records
from medix_ray.trainer.rollouts import Rollouts
from medix_ray.trainer.sync_step import StepBatch, collect_sync
from medix_ray.trainer.timeline import Timeline, plot_timeline
from medix_ray.trajectory import ScoredGroup

logger = logging.getLogger(__name__)


@dataclass
class StepResult:
    metrics: dict[str, Any]
    groups: list[ScoredGroup] = field(default_factory=list)


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
        self.state = RunState()
        self.timeline = Timeline(self.out / "timeline.jsonl")  # who is busy when (timeline.png)
        self.collector: AsyncCollector | None = None
        self._retries_seen = 0
        self._started = False

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def version(self) -> int:
        return self.state.version

    @property
    def synced_version(self) -> int:
        return self.sync.synced_version

    @property
    def counters(self) -> dict[str, int]:
        return self.state.counters

    # -- set-up ----------------------------------------------------------------------------
    def start(self) -> None:
        import ray
        from ray import serve

        from deployments.reward_app import build_reward_app
        from deployments.rollout_app import build_rollout_app
        from medix_ray.data.prompt_length import PromptLengthCheck
        from medix_ray.data.prompts import load_prompt_renderer
        from medix_ray.data.readers import read_samples_from_config, take_samples
        from medix_ray.environment import init_ray
        from medix_ray.models import resolve_model
        from medix_ray.rollout.fleet import RolloutFleet
        from medix_ray.trainer.plan import resource_plan
        from medix_ray.trainer.stream import PromptStream

        cfg, console = self.cfg, current_console()
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
        plan = resource_plan(cfg)
        init_ray(self.address, cpus_needed=plan.totals()["CPU"], num_cpus=self.num_cpus)
        problems = plan.check(dict(ray.cluster_resources()))
        if problems:  # checked up front: an under-provisioned cluster stalls Ray Data or Serve silently
            raise ValueError("the Ray cluster cannot run this config: " + "; ".join(problems))
        self.policy_path = resolve_model(cfg.model.policy)
        self.renderer = load_prompt_renderer(self.policy_path, cfg.model.trust_remote_code)
        serve.start(
            http_options={"host": cfg.serve.host, "port": cfg.serve.port},
            logging_config=console.serve_logging_config(),
        )
        t0 = time.monotonic()
        with ThreadPoolExecutor(3) as pool:  # the three roles start at the same time
            rollout = pool.submit(
                serve.run, build_rollout_app(cfg, self.policy_path), name="medix-rollout", route_prefix=None
            )
            rewards = pool.submit(serve.run, build_reward_app(cfg), name="medix-rewards", route_prefix=None)
            learner = pool.submit(self._new_learner)
            self.fleet = RolloutFleet(rollout.result())
            self.rewards = rewards.result()
            resumed = learner.result()
        logger.info("rollout fleet, reward ensemble and learner group up in %.0f s", time.monotonic() - t0)
        length_check = PromptLengthCheck.from_config(cfg)  # data.max_prompt_length, counted in the read report
        ds, self.read_report = read_samples_from_config(cfg.data, "train", length_check)
        self.stream = PromptStream(ds, self.read_report, seed=cfg.data.seed, shuffle=cfg.data.shuffle)
        if cfg.trainer.val_interval > 0 or cfg.trainer.val_before_train:
            test_ds, test_report = read_samples_from_config(cfg.data, "test", length_check)
            self.val_samples = take_samples(test_ds, test_report, cfg.trainer.val_samples)
        self._resume(resumed)
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

    def _resume(self, client_state: dict[str, Any]) -> None:
        """Takes the run state from the checkpoint, moves the stream to its cursor, syncs the fleet."""
        from medix_ray.sync.coordinator import WeightSync

        self.state = RunState.from_client_state(client_state, restarts=self.state.restarts)
        cursor = self.state.cursor
        self.stream.restore(cursor, pending=cursor.get("pending", []))  # async: prompts in flight come first
        if self.step:
            logger.info("resumed at step %d (data cursor %s)", self.step, cursor)
        self.sync = WeightSync(self.learner, self.fleet, self.cfg.sync, timeline=self.timeline)
        self.rollouts = Rollouts(self.cfg, self.fleet, self.rewards, self.timeline, lambda: self.sync.synced_version)
        self.collector = AsyncCollector(self.rollouts, self.stream, self.cfg, lambda: self.sync.synced_version)
        self._push()

    def _push(self):
        report = self.sync.push(self.version, step=self.step)
        self.collector.notify()
        logger.info(
            "weights v%d synced to %d replicas in %.2f s%s",
            report.version,
            report.replicas,
            report.seconds,
            " (checksums verified)" if report.verified else "",
        )
        return report

    # -- one step ----------------------------------------------------------------------------
    def train_step(self) -> StepResult:
        cfg, step = self.cfg, self.step + 1
        if cfg.trainer.mode == "async":
            batch = self.collector.collect(self.version, step)
        else:
            batch = collect_sync(self.rollouts, self.stream, cfg, step)
        metrics = rollout_metrics(batch, self.version)
        self.counters["stale_groups"] += int(metrics.get("groups/stale_dropped", 0))
        self.counters["unscored_responses"] += int(metrics["reward/unscored"])
        self.counters["rollout_retries"] += self.fleet.retries - self._retries_seen  # counters survive resumes
        self._retries_seen = self.fleet.retries
        metrics.update(self._learn(batch, step))
        self.state.step = step
        if step % cfg.trainer.sync_interval == 0 and self.version != self.synced_version:
            report = self._push()
            metrics.update({"time/sync_s": report.seconds, "sync/gb_per_s": report.gb_per_s})
            metrics["sync/verified"] = float(report.verified)
        metrics["policy/version"] = float(self.version)
        return StepResult(metrics, batch.sampled)

    def _learn(self, batch: StepBatch, step: int) -> dict[str, Any]:
        if not batch.kept:
            self.counters["skipped_updates"] += 1
            return {"update/skipped": 1.0}
        metrics = learn(
            self.learner, self.renderer, batch.kept, self.cfg, self.timeline, step=step, version=self.version
        )
        self.state.version += 1
        return metrics

    def validate(self) -> dict[str, Any]:
        return self.rollouts.validate(self.val_samples, self.step)

    def save(self) -> None:
        t0 = time.monotonic()
        cursor = self.collector.cursor()  # async mode: with the prompts in flight (re-issued by a resumed run)
        with self.timeline.span("learner", "save", step=self.step, version=self.version):
            self.learner.save_checkpoint(**self.state.client_state(cursor))
        logger.info("checkpoint at step %d written in %.1f s", self.step, time.monotonic() - t0)

    # -- the loop ----------------------------------------------------------------------------
    def run(self, progress: bool = True) -> dict[str, Any]:
        """Trains until `trainer.steps`; returns the summary (also written to summary.json)."""
        from tqdm import tqdm

        from medix_ray.learner.group import LearnerError
        from medix_ray.trainer.memory import PeakMemory
        from medix_ray.trainer.metrics import MetricsLog, read_metrics

        t = self.cfg.trainer
        started = time.monotonic()
        with PeakMemory() as memory:
            if not self._started:
                self.start()
            log = MetricsLog(self.out, resume_step=self.step)
            stop = StopOnInterrupt()
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
        return self._summary(log.path, time.monotonic() - started, memory.peak_gib)

    def _summary(self, metrics_path: Path, seconds: float, peak_gib: float) -> dict[str, Any]:
        from medix_ray.trainer.metrics import plot_curves, read_metrics, window_means

        summary: dict[str, Any] = {
            "steps": self.step,
            "policy_version": self.version,
            "seconds": seconds,
            "peak_memory_gib": peak_gib,
            "restarts": self.state.restarts,
            **self.counters,
        }
        rows = read_metrics(metrics_path)
        if rows:
            first, last = window_means(rows, "reward/mean", 5)
            summary.update(reward_first5=first, reward_last5=last, reward_gain=last - first)
            summary["plots"] = [str(p) for p in plot_curves(metrics_path, self.out)]
        self.timeline.close()
        if self.timeline.path.exists():
            summary.setdefault("plots", []).append(str(plot_timeline(self.timeline.path, self.out / "timeline.png")))
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        return summary

    def _recover_learner(self, exc: Exception) -> None:
        """Restarts the learner group from its last checkpoint after a worker died."""
        if self.state.restarts >= self.cfg.trainer.max_restarts:
            raise exc
        self.state.restarts += 1
        logger.error("learner failed (%s); restart %d from the last checkpoint", exc, self.state.restarts)
        self.collector.discard()  # its groups are discarded: the checkpoint's cursor and pending prompts rule
        self.learner.abort()
        self._resume(self._new_learner())

    def pause_rollouts(self) -> None:
        """Async mode: stops taking new prompts (groups in flight finish and are discarded, their prompts
        pending); the next `train_step` starts again from the cursor and the pending prompts, with the
        config as it is then. A run ends this way, so its last checkpoint stores the pending prompts."""
        if self.collector is not None:
            self.collector.stop()

    def shutdown(self) -> None:
        from ray import serve

        if self.collector is not None:
            self.collector.discard()
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

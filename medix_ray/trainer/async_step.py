"""Async mode's step: a batch of finished groups from the rollout driver, while the fleet keeps generating.

    collector = AsyncCollector(rollouts, stream, cfg, synced_version=lambda: sync.synced_version)
    batch = collector.collect(version=3, step=4)   # StepBatch; starts the driver on first use
    collector.cursor()                             # the stream cursor with the prompts in flight
    collector.stop()                               # groups in flight finish and are discarded (pending)

The driver (rollout_driver.py) bounds staleness: groups older than `trainer.max_staleness` at the
update are dropped (STALE) and counted; groups that dynamic sampling drops are FILTERED.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medix_ray.config import MedixConfig
from medix_ray.trainer.sync_step import StepBatch
from medix_ray.trajectory import GroupStatus


class AsyncCollector:
    def __init__(self, rollouts: Any, stream: Any, cfg: MedixConfig, synced_version: Callable[[], int]) -> None:
        self.rollouts = rollouts
        self.stream = stream
        self.cfg = cfg
        self.synced_version = synced_version
        self.driver = None  # a RolloutDriver while running
        self._step = 0  # the step the driver's groups are for (timeline spans)

    @property
    def running(self) -> bool:
        return self.driver is not None and not self.driver.stopped

    def start(self, base_version: int) -> None:
        """Starts the driver at the stream's cursor (pending prompts first), for learner version `base_version`."""
        from medix_ray.trainer.rollout_driver import RolloutDriver

        t = self.cfg.trainer
        self.driver = RolloutDriver(
            lambda sample: self.rollouts.produce(sample, self._step),
            self.rollouts.keep,
            self.stream,
            want=t.prompts_per_step,
            max_staleness=t.max_staleness,
            workers=t.prompts_per_step,
            synced_version=self.synced_version,
            base_version=base_version,
        )
        self.driver.start()

    def collect(self, version: int, step: int) -> StepBatch:
        """Waits for `trainer.prompts_per_step` kept groups no staler than `trainer.max_staleness` at `version`."""
        self._step = step
        if not self.running:  # first use, or a run or step after the last run ended
            if self.driver is not None:
                cursor = self.driver.cursor()
                self.stream.restore(cursor, pending=cursor.get("pending", []))
            self.start(version)
        taken = self.driver.take(version)
        for g in taken.stale:
            g.status = GroupStatus.STALE
        for g in taken.filtered:
            g.status = GroupStatus.FILTERED
        lags = [version - g.rollout.version for g in taken.kept]
        return StepBatch(
            kept=taken.kept,
            sampled=taken.sampled,
            rounds=1,
            rollout_s=sum(g.rollout_s for g in taken.sampled),
            reward_s=sum(g.reward_s for g in taken.sampled),
            extra={
                "groups/stale_dropped": float(len(taken.stale)),
                "time/wait_s": taken.waited_s,
                "policy/version_lag": sum(lags) / len(lags),
                "policy/version_lag_max": float(max(lags)),
            },
        )

    def notify(self) -> None:
        """The synced version moved: waiting producers may start."""
        if self.driver is not None:
            self.driver.notify()

    def cursor(self) -> dict[str, Any]:
        """The stream's cursor and the prompts in flight (what a checkpoint stores)."""
        return self.driver.cursor() if self.driver is not None else self.stream.state()

    def stop(self) -> None:
        """Stops taking prompts; groups in flight finish and are discarded (their prompts stay pending)."""
        if self.driver is not None:
            self.driver.stop()

    def discard(self) -> None:
        """Stops and forgets the driver (a learner restart: the checkpoint's cursor rules)."""
        self.stop()
        self.driver = None

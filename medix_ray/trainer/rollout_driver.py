"""Asynchronous mode's rollout driver: the fleet and the reward keep working while the learner trains.

`workers` threads each take one prompt at a time from the prompt stream, roll it out on the fleet
(one group of n responses), score the group at once and put it in a buffer; a group that dynamic
sampling drops frees its place, and the next prompt starts at once. The learner takes complete
batches of `want` kept groups (`take`), the least recent policy versions first.

Bounded staleness (the lag of a group is the learner's version at its update minus the policy
version that generated it). Admission: the k-th group still headed for training (counted from
the driver's start, dropped ones given back) belongs to batch k // want, trained at learner version
base + k // want, and the replicas it can run on hold at least the fleet's synced version; so a
prompt starts only while base + k // want <= synced version + max_staleness. Groups that still
arrive too late (they finished after later groups) are dropped by `take` and counted; nothing older
than `max_staleness` is ever handed to the learner.

Checkpoints: `pending()` gives the stream coordinates of the prompts taken but neither trained on
nor dropped (in flight or waiting); the checkpoint stores them and a resumed stream gives them again
(stream.py). A rollout or reward failure stops the driver and is raised by the next `take`; the
failed prompt stays pending.

    driver = RolloutDriver(produce, keep, stream, want=4, max_staleness=1, workers=4,
                           synced_version=lambda: trainer.synced_version, base_version=trainer.version)
    driver.start()
    batch = driver.take(learner_version=trainer.version)   # Batch: kept, dropped, stale, waited_s
    driver.stop()
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medix_ray.data.schema import Sample
from medix_ray.trainer.stream import Coord, PromptStream
from medix_ray.trajectory import ScoredGroup

logger = logging.getLogger(__name__)


@dataclass
class Batch:
    """What `take` hands the learner: `want` kept groups, and what was dropped since the last batch."""

    kept: list[ScoredGroup]  # least recent policy version first
    filtered: list[ScoredGroup] = field(default_factory=list)  # dropped by dynamic sampling (or unscored)
    stale: list[ScoredGroup] = field(default_factory=list)  # dropped: older than max_staleness at this update
    waited_s: float = 0.0  # the learner's wait for the batch

    @property
    def sampled(self) -> list[ScoredGroup]:
        return [*self.kept, *self.filtered, *self.stale]


@dataclass
class _Ready:
    key: int
    coord: Coord
    group: ScoredGroup


class RolloutDriver:
    def __init__(
        self,
        produce: Callable[[Sample], ScoredGroup],
        keep: Callable[[ScoredGroup], bool],
        stream: PromptStream,
        *,
        want: int,
        max_staleness: int,
        workers: int,
        synced_version: Callable[[], int],
        base_version: int,
        version_of: Callable[[ScoredGroup], int] = lambda group: group.rollout.version,
    ):
        self.produce = produce
        self.keep = keep
        self.stream = stream
        self.want = want
        self.max_staleness = max_staleness
        self.workers = workers
        self.synced_version = synced_version
        self.base_version = base_version
        self.version_of = version_of
        self._cond = threading.Condition()
        self._keys = itertools.count()
        self._inflight: dict[int, Coord] = {}
        self._ready: list[_Ready] = []
        self._filtered: list[ScoredGroup] = []
        self._admitted = 0  # groups headed for training since the start (dropped ones given back)
        self._error: BaseException | None = None
        self._stopping = False
        self._threads: list[threading.Thread] = []

    # -- producer side -------------------------------------------------------------------
    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"medix-rollout-driver-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def _may_start(self) -> bool:
        batch_index = self._admitted // self.want
        return self.base_version + batch_index <= self.synced_version() + self.max_staleness

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._may_start():
                    self._cond.wait(timeout=1.0)  # the synced version moves outside the lock
                if self._stopping:
                    return
                ((coord, sample),) = self.stream.take_indexed(1)
                key = next(self._keys)
                self._inflight[key] = coord
                self._admitted += 1
            try:
                group = self.produce(sample)
                kept = self.keep(group)
            except BaseException as exc:  # noqa: BLE001 - raised by the learner's next take()
                with self._cond:
                    if self._error is None:
                        self._error = exc
                    self._stopping = True
                    self._cond.notify_all()
                logger.error("rollout driver stopped: sample %s failed: %s", sample.id, exc)
                return
            with self._cond:
                if self._stopping:  # stopped meanwhile: the prompt stays pending
                    return
                del self._inflight[key]
                if kept:
                    self._ready.append(_Ready(key, coord, group))
                else:
                    self._filtered.append(group)
                    self._admitted -= 1
                self._cond.notify_all()

    # -- learner side --------------------------------------------------------------------
    def take(self, learner_version: int, timeout_s: float | None = None) -> Batch:
        """Waits for `want` kept groups no staler than `max_staleness` at `learner_version`; returns them with
        the groups dropped since the last batch. Raises the driver's error if a rollout failed."""
        start = time.monotonic()
        stale: list[ScoredGroup] = []
        with self._cond:
            while True:
                fresh = []
                for r in self._ready:
                    if learner_version - self.version_of(r.group) > self.max_staleness:
                        stale.append(r.group)
                        self._admitted -= 1
                    else:
                        fresh.append(r)
                self._ready = fresh
                if len(self._ready) >= self.want:
                    break
                if self._error is not None:
                    raise self._error
                if self._stopping:
                    raise RuntimeError("the rollout driver was stopped")
                if timeout_s is not None and time.monotonic() - start > timeout_s:
                    raise TimeoutError(f"no batch of {self.want} groups in {timeout_s:.0f} s")
                self._cond.notify_all()  # admission may have opened (a drop)
                self._cond.wait(timeout=1.0)
            self._ready.sort(key=lambda r: (self.version_of(r.group), r.key))
            kept, self._ready = self._ready[: self.want], self._ready[self.want :]
            filtered, self._filtered = self._filtered, []
            self._cond.notify_all()
        if stale:
            logger.warning("dropped %d groups older than max_staleness=%d", len(stale), self.max_staleness)
        return Batch([r.group for r in kept], filtered, stale, time.monotonic() - start)

    def notify(self) -> None:
        """Wakes waiting producers (the synced version moved)."""
        with self._cond:
            self._cond.notify_all()

    # -- checkpoints and shutdown ---------------------------------------------------------
    def _pending(self) -> list[Coord]:  # under the lock
        return sorted([*self._inflight.values(), *(r.coord for r in self._ready)])

    def pending(self) -> list[Coord]:
        """The stream coordinates of prompts taken but neither trained on nor dropped, in order."""
        with self._cond:
            return self._pending()

    def cursor(self) -> dict[str, Any]:
        """The stream's cursor and the pending coordinates, read together (what a checkpoint stores)."""
        with self._cond:
            return {**self.stream.state(), "pending": [list(c) for c in self._pending()]}

    @property
    def stopped(self) -> bool:
        return self._stopping

    def stop(self, timeout_s: float = 0.0) -> None:
        """Stops taking prompts; groups in flight finish in the background and are discarded (their prompts
        stay pending: the run's checkpoint has them). Waits up to `timeout_s` for the threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(timeout=max(deadline - time.monotonic(), 0.0))

"""A run's life around its steps: the state a checkpoint keeps, Ctrl-C, and restarting a failed learner.

    state = RunState.from_client_state(learner.start())   # resumed: step, version, counters, data cursor
    learner.save_checkpoint(**state.client_state(cursor))
    stop = StopOnInterrupt()                               # the first Ctrl-C finishes the step, then saves

A checkpoint holds every learner rank's shard (Ray Train) and the client state: the step, the
policy version, the counters and the data cursor (with async mode's prompts in flight). A learner
worker that dies ends the learner group, which restarts from the last checkpoint, up to
`trainer.max_restarts` times (the trainer's `_recover_learner`).
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

COUNTERS = ("unscored_responses", "rollout_retries", "skipped_updates", "stale_groups")


@dataclass
class RunState:
    """What a run has done so far; survives resumes through the checkpoint's client state."""

    step: int = 0  # training steps done
    version: int = 0  # learner updates applied (a step without kept groups applies none)
    restarts: int = 0  # learner restarts in this process
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    cursor: dict[str, Any] = field(default_factory=dict)  # the prompt stream's (with async pending prompts)

    @classmethod
    def from_client_state(cls, state: dict[str, Any], restarts: int = 0) -> RunState:
        counters = dict.fromkeys(COUNTERS, 0)
        counters.update({k: int(v) for k, v in state.get("counters", {}).items()})
        step = int(state.get("step", 0))
        return cls(step, int(state.get("version", step)), restarts, counters, dict(state.get("cursor", {})))

    def client_state(self, cursor: dict[str, Any]) -> dict[str, Any]:
        """Returns what the checkpoint stores (the learner group adds the base model)."""
        return {"step": self.step, "version": self.version, "cursor": cursor, "counters": dict(self.counters)}


class StopOnInterrupt:
    """The first Ctrl-C asks the loop to stop after the current step (which then checkpoints); a second
    one interrupts at once. Only in the main thread (signal handlers can be set nowhere else)."""

    def __init__(self) -> None:
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
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

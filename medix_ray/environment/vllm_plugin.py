"""medix-ray's vLLM general plugin: on a small CPU node, vLLM's idle queue readers wait without spinning.

vLLM loads every `vllm.general_plugins` entry point (pyproject.toml) in each of its processes (the engine
core, the model workers, an API server) before it builds their message queues. A multiprocess vLLM engine
passes every step between its engine core and its worker through shared-memory queues, and a reader of
such a queue spins (`os.sched_yield` in a loop) for `busy_loop_s` = 1 s after each message before it
waits on its socket. On a machine of a few cores shared by the rollout replica, the reward judge and the
learner, every idle engine process thus took up to a core for a second after each call: the judge's
worker after scoring (into the learner's update), the rollout worker after generating (into the judge's
scoring). Measured on 2 cores, a 2x4 RL step spent 1.3 s scoring instead of 0.6 s (docs/benchmarks.md).

With `reader_spin_s()` = 0 a reader waits on its socket at once. Waiting on the socket alone can miss a
wake-up (the writer's notice can be dropped, vLLM then re-reads the queue after 5 s), so the re-read
interval becomes `RECHECK_MS`: a missed wake-up costs at most that, and an idle reader wakes 100 times a
second for a check of a few microseconds.

`MEDIX_VLLM_READER_SPIN_S` sets the spin in seconds (vLLM's own 1 s: `MEDIX_VLLM_READER_SPIN_S=1`); unset,
it is 0 on a small CPU node (medix_ray/environment/node.py) and vLLM's default elsewhere (GPU nodes, where the
spin keeps a step's hand-off fast and cores are plentiful).
"""

from __future__ import annotations

import functools
import inspect
import logging

from medix_ray.environment.node import is_small_cpu_node
from medix_ray.environment.switches import READER_SPIN_S

logger = logging.getLogger(__name__)

SPIN_ENV = READER_SPIN_S.name
RECHECK_MS = 10  # the longest a reader sleeps before it looks at its queue again when it does not spin


def reader_spin_s(cpu_count: int | None = None, on_cpu: bool | None = None) -> float | None:
    """Returns the seconds a vLLM queue reader spins after a message, or None to keep vLLM's default;
    a `MEDIX_VLLM_READER_SPIN_S` that is not a number >= 0 raises ValueError naming it."""
    chosen = READER_SPIN_S.read()
    if chosen is not None:
        return chosen
    if on_cpu is None:
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
    return 0.0 if on_cpu and is_small_cpu_node(cpu_count) else None


def set_reader_spin(spin_s: float) -> bool:
    """Makes vLLM's shared-memory queue readers spin `spin_s` seconds after a message (0: none; the re-read
    interval is then `RECHECK_MS`). Returns False, with a warning, where this vLLM has no such setting."""
    from vllm.distributed.device_communicators import shm_broadcast

    spin = getattr(shm_broadcast, "SpinCondition", None)
    init = getattr(spin, "__init__", None)
    if init is None or "busy_loop_s" not in inspect.signature(init).parameters:
        logger.warning("this vLLM's shm_broadcast has no SpinCondition(busy_loop_s): readers keep spinning")
        return False
    original = getattr(init, "__medix_original__", init)

    @functools.wraps(original)
    def patched(self, *args, busy_loop_s: float = spin_s, **kwargs):
        original(self, *args, busy_loop_s=busy_loop_s, **kwargs)

    patched.__medix_original__ = original  # type: ignore[attr-defined]
    spin.__init__ = patched
    if spin_s < 1.0 and hasattr(shm_broadcast, "SHM_READER_RECHECK_INTERVAL_MS"):
        shm_broadcast.SHM_READER_RECHECK_INTERVAL_MS = min(shm_broadcast.SHM_READER_RECHECK_INTERVAL_MS, RECHECK_MS)
    return True


def register() -> None:
    """The entry point vLLM calls in each of its processes (`vllm.general_plugins`)."""
    spin_s = reader_spin_s()
    if spin_s is not None:
        set_reader_spin(spin_s)

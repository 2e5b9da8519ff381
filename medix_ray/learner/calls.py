"""The calls the learner group sends its ranks: typed records that run one `LearnerWorker` method.

The group (group.py) posts one call object per rank on its call board; every rank runs
`call.run(worker)` and replies with the method's typed result. There is no name to look up: a call
is its own dispatch, so adding a learner method means adding a call class here.

    ComputeLogprobs(shard).run(worker)  -> Tensor [rows, T - 1] | None
    Update(shard).run(worker)           -> list[UpdateStats], one per mini-batch
    OpenSync(SyncOpen(...)).run(worker) -> SyncOpened           (medix_ray/sync/endpoint.py)

A payload too large for the board (a batch shard) travels as an ObjectRef and is fetched by the rank.
`worker` below is the rank's `LearnerWorker` (worker.py, which imports this module: it is not imported
back, so the two stay acyclic).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from medix_ray.sync.endpoint import SyncOpen, SyncOpened, SyncPush
    from medix_ray.sync.sender import SentPush
    from medix_ray.trajectory import UpdateStats


def _resolve(payload: Any) -> Any:
    """Returns a payload, fetched from the object store when it came as a reference."""
    import ray

    return ray.get(payload) if isinstance(payload, ray.ObjectRef) else payload


class LearnerCall:
    """One call to one rank; `run` returns what the rank replies."""

    def run(self, worker: Any) -> Any:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class ComputeLogprobs(LearnerCall):
    shard: Any  # PolicyBatch or an ObjectRef of one

    def run(self, worker: Any) -> torch.Tensor | None:
        return worker.logprobs(_resolve(self.shard))


@dataclass(frozen=True)
class ComputeRefLogprobs(LearnerCall):
    shard: Any  # PolicyBatch or an ObjectRef of one

    def run(self, worker: Any) -> torch.Tensor:
        return worker.ref_logprobs(_resolve(self.shard))


@dataclass(frozen=True)
class Update(LearnerCall):
    shard: Any  # PolicyBatch or an ObjectRef of one: this rank's rows of every mini-batch

    def run(self, worker: Any) -> list[UpdateStats]:
        return worker.update(_resolve(self.shard))


@dataclass(frozen=True)
class SaveCheckpoint(LearnerCall):
    client_state: dict[str, Any]  # step, version, data cursor, counters, base model (JSON-able)

    def run(self, worker: Any) -> bool:
        return worker.save(self.client_state)


@dataclass(frozen=True)
class GatherState(LearnerCall):
    def run(self, worker: Any) -> list | None:
        return worker.state_dict()


@dataclass(frozen=True)
class OpenSync(LearnerCall):
    request: SyncOpen

    def run(self, worker: Any) -> SyncOpened:
        return worker.sync.open(self.request)


@dataclass(frozen=True)
class ConnectSync(LearnerCall):
    def run(self, worker: Any) -> bool:
        return worker.sync.connect()


@dataclass(frozen=True)
class PushWeights(LearnerCall):
    request: SyncPush

    def run(self, worker: Any) -> SentPush:
        return worker.sync.push(self.request)


@dataclass(frozen=True)
class RunFunction(LearnerCall):
    """Runs `fn(worker, payload)`: the extension point of benchmarks and tools (bench/weight_sync.py)."""

    fn: Callable[[Any, Any], Any]
    payload: Any = None

    def run(self, worker: Any) -> Any:
        return self.fn(worker, _resolve(self.payload))

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", "function")


@dataclass(frozen=True)
class Stop(LearnerCall):
    """Ends the rank's serving loop (its sync endpoint is closed)."""

    def run(self, worker: Any) -> None:
        worker.sync.close()

"""Checkpoint files are read with `torch.load(weights_only=True)`: unpickling runs no code from the file.

A checkpoint folder is user input (`medix-ray export PATH`, a resumed run's storage), and a full
unpickle of a `.pt` file can run arbitrary code. Every read here is weights-only:

- our own files (the RNG state) hold only tensors and plain Python values: `load_weights_only(path)`;
- DeepSpeed 0.19 calls `torch.load(..., weights_only=False)` itself, in its checkpoint engine and in
  `zero_to_fp32`. `weights_only_loads()` sets torch's `TORCH_FORCE_WEIGHTS_ONLY_LOAD`, which overrides
  that argument, for the duration of the call, and allows the three DeepSpeed types its ZeRO-2/3
  checkpoints hold besides tensors (`DEEPSPEED_SAFE_GLOBALS`: an enum, a dataclass of two ints and the
  static loss scaler, all rebuilt from their fields; checked with
  `torch.serialization.get_unsafe_globals_in_checkpoint` on ZeRO-2 and ZeRO-3 checkpoints).

A file that needs anything else fails with a `CheckpointError` naming the file and the types:

    with weights_only_loads():
        engine.load_checkpoint(directory, tag="state")
    rng = load_weights_only(Path(directory) / "rng_rank0.pt")
"""

from __future__ import annotations

import contextlib
import os
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

FORCE_ENV = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
_env_lock = threading.Lock()


class CheckpointError(ValueError):
    """A checkpoint folder is missing, not a learner checkpoint, or unsafe to load; the message names it."""


def deepspeed_safe_globals() -> list[Any]:
    """Returns the DeepSpeed classes a ZeRO-2/3 checkpoint pickles besides tensors and builtins."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, fragment_address, LossScaler]


def _refused(where: object, exc: Exception) -> CheckpointError:
    """Returns the error for a file a weights-only load refused, with torch's line naming the type."""
    lines = str(exc).splitlines()
    reason = next((line.strip() for line in lines if "GLOBAL" in line), lines[0] if lines else type(exc).__name__)
    return CheckpointError(f"{where}: refused by the weights-only checkpoint loader ({reason})")


def load_weights_only(path: str | os.PathLike) -> Any:
    """Returns `torch.load(path, weights_only=True)` on CPU; a file it refuses raises CheckpointError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refused(path, exc) from exc


@contextlib.contextmanager
def weights_only_loads(folder: str | os.PathLike | None = None) -> Iterator[None]:
    """Makes every `torch.load` in the block weights-only (DeepSpeed's included), allowing DeepSpeed's types.

    A refused file raises CheckpointError naming `folder` (the checkpoint) and the types it needs.
    """
    with _env_lock:
        previous = os.environ.get(FORCE_ENV)
        os.environ[FORCE_ENV] = "1"
    try:
        with torch.serialization.safe_globals(deepspeed_safe_globals()):
            yield
    except pickle.UnpicklingError as exc:
        raise _refused(Path(folder) if folder is not None else "a checkpoint file", exc) from exc
    finally:
        with _env_lock:
            if previous is None:
                os.environ.pop(FORCE_ENV, None)
            else:
                os.environ[FORCE_ENV] = previous

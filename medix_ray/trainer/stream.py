"""The prompt stream: training samples from Ray Data, epoch after epoch, with an exact cursor.

Each epoch reads the validated dataset in its stored order (Ray Data with `preserve_order`) and
shuffles it through a seeded local buffer, so the order depends only on (seed, epoch). The cursor
(epoch, position) goes into every checkpoint; a resumed run skips to it and continues with the
same samples an uninterrupted run would have drawn.

    stream = PromptStream(ds, report, seed=1, shuffle_window=256)
    batch = stream.take(8)
    stream.state()            # {"epoch": 0, "position": 8}
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from medix_ray.data.readers import ReadReport, iter_validated
from medix_ray.data.schema import Sample


class EmptyDatasetError(ValueError):
    """The training split has no usable sample."""


class PromptStream:
    def __init__(self, ds: Any, report: ReadReport, *, seed: int, shuffle: bool = True, shuffle_window: int = 1024):
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        self.ds = ds
        self.report = report
        self.seed = seed
        self.shuffle = shuffle
        self.window = shuffle_window
        self.epoch = 0
        self.position = 0
        self._it: Iterator[Sample] | None = None

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def restore(self, state: dict[str, int]) -> None:
        self.epoch = int(state.get("epoch", 0))
        target = int(state.get("position", 0))
        self._it = self._epoch_iter(self.epoch)
        for _ in range(target):
            next(self._it)
        self.position = target

    def _epoch_iter(self, epoch: int) -> Iterator[Sample]:
        rng = random.Random(f"{self.seed}:{epoch}")
        buffer: list[Sample] = []
        for row in iter_validated(self.ds, self.report):
            buffer.append(Sample.from_row(row))
            if self.shuffle and len(buffer) >= self.window:
                yield buffer.pop(rng.randrange(len(buffer)))
            elif not self.shuffle:
                yield buffer.pop()
        if self.shuffle:
            rng.shuffle(buffer)
        yield from buffer

    def take(self, count: int) -> list[Sample]:
        """Returns the next `count` samples, starting a new epoch when one runs out."""
        out: list[Sample] = []
        empty_epochs = 0
        while len(out) < count:
            if self._it is None:
                self._it = self._epoch_iter(self.epoch)
            try:
                out.append(next(self._it))
                self.position += 1
                empty_epochs = 0
            except StopIteration:
                if self.position == 0:
                    empty_epochs += 1
                    if empty_epochs > 1:
                        source = self.report.source
                        raise EmptyDatasetError(f"the training data ({source}) has no usable sample") from None
                self.epoch += 1
                self.position = 0
                self._it = None
        return out

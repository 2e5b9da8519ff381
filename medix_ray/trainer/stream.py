"""The prompt stream: training samples from Ray Data, epoch after epoch, with an exact cursor.

Each epoch reads the validated dataset in its stored order (Ray Data with `preserve_order`) and
shuffles it through a seeded local buffer, so the order depends only on (seed, epoch). The cursor
(epoch, position) goes into every checkpoint; a resumed run skips to it and continues with the
same samples an uninterrupted run would have drawn.

    stream = PromptStream(ds, report, seed=1, shuffle_window=256)
    batch = stream.take(8)
    stream.state()            # {"epoch": 0, "position": 8}

Each sample's place in the stream is its coordinate (epoch, position after taking it: 1 for an
epoch's first). Asynchronous training checkpoints while prompts are still in flight: it saves the
cursor and the coordinates of the prompts taken but not yet trained on (`pending`), and a resumed
stream gives those again, in order, skipping the ones already trained on, before going on past the
cursor: none lost, none trained twice.

    stream.restore({"epoch": 0, "position": 8}, pending=[(0, 3), (0, 7)])
    stream.take(3)            # samples (0, 3), (0, 7), then (0, 9)
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from medix_ray.data.readers import ReadReport, iter_validated
from medix_ray.data.schema import Sample

Coord = tuple[int, int]  # (epoch, position after taking the sample)


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
        self._replay: set[Coord] = set()  # pending coordinates still to give again after a restore
        self._replay_until: Coord = (0, 0)  # the saved cursor: before it, only `_replay` coordinates are given

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def restore(self, state: dict[str, int], pending: list[Coord] | list[list[int]] = ()) -> None:
        """Moves to the saved cursor; with `pending`, to the first pending coordinate instead, so that the
        pending samples are given again (and the others before the cursor skipped)."""
        cursor = (int(state.get("epoch", 0)), int(state.get("position", 0)))
        replay = {(int(e), int(p)) for e, p in pending}
        late = [c for c in replay if c > cursor]
        if late:
            raise ValueError(f"pending stream coordinates {sorted(late)} lie after the saved cursor {cursor}")
        start = (min(replay)[0], min(replay)[1] - 1) if replay else cursor
        self.epoch, target = start
        self._it = self._epoch_iter(self.epoch)
        for _ in range(target):
            next(self._it)
        self.position = target
        self._replay, self._replay_until = replay, cursor

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
        return [sample for _, sample in self.take_indexed(count)]

    def take_indexed(self, count: int) -> list[tuple[Coord, Sample]]:
        """Returns the next `count` samples with their coordinates."""
        out: list[tuple[Coord, Sample]] = []
        empty_epochs = 0
        while len(out) < count:
            if self._it is None:
                self._it = self._epoch_iter(self.epoch)
            try:
                sample = next(self._it)
                self.position += 1
                empty_epochs = 0
                coord = (self.epoch, self.position)
                if coord <= self._replay_until:  # before the saved cursor: only the pending ones again
                    if coord in self._replay:
                        self._replay.discard(coord)
                        out.append((coord, sample))
                    continue
                out.append((coord, sample))
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

"""A phase's results on disk: JSONL part files, each written atomically, read back one row per id.

    <output_dir>/<model>/<phase>/part-000001.jsonl, part-000002.jsonl, ...

A batch of rows becomes one part file: written to a hidden temporary file, flushed to disk and then
renamed into place, so a crash leaves either the whole part or nothing (never half a line, the
reference's weakness 10). Reading takes every part in order and keeps the newest row of each id, so
a re-run that re-does an item (say, after a judge error) replaces it without duplicating it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_PART = re.compile(r"^part-(\d{6})\.jsonl$")


class PhaseStore:
    """The rows of one phase, keyed by item id."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob(".part-*.tmp"):  # a crash between write and rename
            stale.unlink(missing_ok=True)

    def _parts(self) -> list[tuple[int, Path]]:
        parts = []
        for path in self.dir.iterdir():
            match = _PART.match(path.name)
            if match:
                parts.append((int(match.group(1)), path))
        return sorted(parts)

    def rows(self) -> dict[str, dict[str, Any]]:
        """Returns {id: row}, the newest row of each id, in first-written order."""
        out: dict[str, dict[str, Any]] = {}
        for _, path in self._parts():
            with path.open(encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{path}:{lineno}: not a JSON line ({exc}); the part file is corrupt") from exc
                    out[row["id"]] = row
        return out

    def write(self, rows: Iterable[Mapping[str, Any]]) -> Path | None:
        """Writes the rows as one new part file, atomically; returns its path (None for no rows)."""
        lines = [json.dumps(dict(r), ensure_ascii=False, default=_json_default) + "\n" for r in rows]
        if not lines:
            return None
        parts = self._parts()
        index = parts[-1][0] + 1 if parts else 1
        target = self.dir / f"part-{index:06d}.jsonl"
        fd, tmp = tempfile.mkstemp(prefix=".part-", suffix=".tmp", dir=self.dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.writelines(lines)
                fh.flush()
                os.fsync(fh.fileno())
            if target.exists():  # two writers in one folder: never overwrite a part
                raise FileExistsError(f"{target} exists; is another evaluation writing to {self.dir}?")
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target


def stored_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Returns a row as it is stored: JSON-safe, without image bytes (pandas' NaN for a missing score is None)."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items() if k != "image"}


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays from Ray Data batches
        return value.tolist()
    if isinstance(value, bytes):
        raise TypeError("bytes cannot be stored in a phase file; drop the image column first")
    raise TypeError(f"cannot store {type(value).__name__} in a phase file")

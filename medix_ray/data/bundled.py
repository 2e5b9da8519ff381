"""The sample set shipped inside the package (synthetic; see docs/datasheet.md)."""

from __future__ import annotations

from pathlib import Path

BUNDLED_DIR = Path(__file__).parent / "bundled"
SPLITS = ("train", "test")


def bundled_path(split: str) -> Path:
    """Returns the parquet file of a bundled split."""
    if split not in SPLITS:
        raise ValueError(f"bundled data has splits {', '.join(SPLITS)}; got '{split}'")
    path = BUNDLED_DIR / f"{split}.parquet"
    if not path.is_file():
        raise FileNotFoundError(
            f"bundled split missing: {path}; rebuild it with `make data` (python -m tools.synth.build, from a checkout)"
        )
    return path

"""Readers: any source in the medix-rl-data schema into a validated Ray Data `Dataset`.

    ds, report = read_samples("bundled", split="train", on_bad_sample="skip")
    for row in ds.iter_rows(): ...
    report.summary()   # {"read": 331, "skipped": 2, "reasons": {...}}

Sources: `bundled` (the sample set shipped in the package), a parquet file or folder, a jsonl
file (relative image paths resolve against its folder), a `datasets.save_to_disk` folder, or a
hub id (needs network). Rows are validated in a streaming `map_batches`; with
`on_bad_sample="skip"`, each skip is logged with its sample id and counted in the report,
which the caller prints or logs — nothing is dropped silently.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from medix_ray.data.bundled import bundled_path
from medix_ray.data.modality import MODALITY_TAGS
from medix_ray.data.schema import SAMPLE_SCHEMA, Sample, SampleError, validate_row

if TYPE_CHECKING:
    import ray.data

    from medix_ray.config import DataConfig

logger = logging.getLogger(__name__)

FORMATS = ("auto", "parquet", "jsonl", "hf_disk", "hub")


class DataSourceError(ValueError):
    """A data source cannot be read; the message names the source."""


def detect_format(source: str) -> str:
    """Returns the reader format of a source path or hub id."""
    path = Path(source)
    if path.is_file():
        if path.suffix == ".parquet":
            return "parquet"
        if path.suffix in (".jsonl", ".json"):
            return "jsonl"
        raise DataSourceError(f"data source {source}: unknown file type '{path.suffix}'; expected .parquet or .jsonl")
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return "hf_disk"
        if any(path.rglob("*.parquet")):
            return "parquet"
        if any(path.glob("*.jsonl")):
            return "jsonl"
        raise DataSourceError(f"data source {source}: folder holds no parquet, jsonl or datasets.save_to_disk files")
    if source.count("/") == 1 and not source.startswith((".", "/")):
        return "hub"
    raise DataSourceError(f"data source not found: {source}")


@dataclass
class ReadReport:
    """Counts of what a read validated and skipped, filled in as the dataset streams."""

    source: str
    split: str
    _counter: Any = field(default=None, repr=False)  # a SkipCounter actor handle

    def summary(self) -> dict[str, Any]:
        """Returns {"read", "valid", "excluded", "skipped", "reasons": {reason: n}, "examples": [...]}."""
        import ray

        return ray.get(self._counter.summary.remote())

    def first_error(self) -> SampleError | None:
        """Returns the first recorded bad sample as a SampleError, or None."""
        import ray

        found = ray.get(self._counter.first_error.remote())
        return SampleError(*found) if found else None

    def log(self) -> None:
        s = self.summary()
        level = logging.WARNING if s["skipped"] else logging.INFO
        logger.log(
            level,
            "data %s (%s): read %d, valid %d, excluded by config %d, skipped %d %s",
            self.source,
            self.split,
            s["read"],
            s["valid"],
            s["excluded"],
            s["skipped"],
            s["reasons"] or "",
        )


def _make_counter_class():
    import ray

    @ray.remote(num_cpus=0)
    class SkipCounter:
        """Collects per-batch validation counts from the Ray Data workers."""

        def __init__(self) -> None:
            self.read = 0
            self.valid = 0
            self.excluded = 0
            self.reasons: Counter[str] = Counter()
            self.examples: list[str] = []

        def add(self, read: int, valid: int, excluded: int, errors: list[tuple[str, str, str]]) -> None:
            self.read += read
            self.valid += valid
            self.excluded += excluded
            for sample_id, field_name, message in errors:
                self.reasons[field_name.split("[")[0]] += 1
                if len(self.examples) < 20:
                    self.examples.append((sample_id, field_name, message))

        def first_error(self) -> tuple[str, str, str] | None:
            return self.examples[0] if self.examples else None

        def summary(self) -> dict[str, Any]:
            return {
                "read": self.read,
                "valid": self.valid,
                "excluded": self.excluded,  # valid, but left out by the config (data.text_only)
                "skipped": self.read - self.valid - self.excluded,
                "reasons": dict(self.reasons),
                "examples": [f"sample '{i}': field '{f}': {m}" for i, f, m in self.examples],
            }

    return SkipCounter


class _Validator:
    """The map_batches function: validates a pyarrow batch into SAMPLE_SCHEMA rows."""

    def __init__(
        self,
        *,
        on_bad_sample: str,
        counter: Any,
        keys: dict[str, str],
        tags: list[str],
        base_dir: str | None,
        verify_images: bool,
        text_only: bool = False,
    ):
        self.on_bad_sample = on_bad_sample
        self.counter = counter
        self.keys = keys
        self.tags = tags
        self.base_dir = base_dir
        self.verify_images = verify_images
        self.text_only = text_only

    def __call__(self, batch: pa.Table) -> pa.Table:
        import ray

        rows, errors, excluded = [], [], 0
        for i, raw in enumerate(batch.to_pylist()):
            try:
                row = validate_row(
                    raw,
                    tags=self.tags,
                    base_dir=self.base_dir,
                    verify_images=self.verify_images,
                    position=i,
                    **self.keys,
                )
                if self.text_only and row["image"]:
                    excluded += 1
                else:
                    rows.append(row)
            except SampleError as exc:
                errors.append((exc.sample_id, exc.field, exc.message))
                if self.on_bad_sample == "error":
                    # Ray Data re-raises a generic UserCodeException on the driver; the counter keeps
                    # the real error so that `iter_validated` can raise it by name.
                    ray.get(self.counter.add.remote(i + 1, len(rows), excluded, errors))
                    raise
                logger.warning("skipping bad sample: %s", exc)
        # Waited for, so that the counts are in before the batch is: a report read right after the
        # dataset is consumed is complete.
        ray.get(self.counter.add.remote(batch.num_rows, len(rows), excluded, errors))
        return pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)


def _open_dataset(source: str, fmt: str, split: str) -> tuple[ray.data.Dataset, str | None]:
    """Returns the raw Ray Dataset of a source and the folder relative image paths resolve against."""
    import ray.data

    if fmt == "parquet":
        return ray.data.read_parquet(source), None
    if fmt == "jsonl":
        path = Path(source)
        base = str(path if path.is_dir() else path.parent)
        files = sorted(str(p) for p in path.glob("*.jsonl")) if path.is_dir() else [source]
        return ray.data.read_json(files, lines=True), base
    if fmt == "hf_disk":
        import datasets

        loaded = datasets.load_from_disk(source)
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataSourceError(f"data source {source}: no split '{split}'; it has {sorted(loaded)}")
            loaded = loaded[split]
        return ray.data.from_arrow(_undecoded_arrow(loaded)), None
    if fmt == "hub":
        import datasets

        try:
            loaded = datasets.load_dataset(source, split=split)
        except Exception as exc:  # offline machines, wrong ids and auth errors all land here
            raise DataSourceError(f"data source {source}: cannot load hub dataset split '{split}': {exc}") from exc
        return ray.data.from_arrow(_undecoded_arrow(loaded)), None
    raise DataSourceError(f"data source {source}: unknown format '{fmt}'; expected one of {', '.join(FORMATS)}")


def _undecoded_arrow(ds: Any) -> pa.Table:
    """Returns the arrow table behind a `datasets.Dataset`, images left as {bytes, path} structs.

    The table is memory-mapped from the dataset's cache files; Ray copies it into the object
    store, so for datasets larger than memory write parquet first (`ds.to_parquet(...)`).
    """
    return ds.data.table


def read_samples(
    source: str = "bundled",
    *,
    split: str = "train",
    fmt: str = "auto",
    on_bad_sample: str = "error",
    prompt_key: str = "problem",
    answer_key: str = "solution",
    image_key: str = "image",
    tags: list[str] | None = None,
    verify_images: bool = True,
    text_only: bool = False,
) -> tuple[ray.data.Dataset, ReadReport]:
    """Returns (validated Dataset in SAMPLE_SCHEMA, its ReadReport); starts Ray if needed.

    With `on_bad_sample="error"` the first bad sample raises SampleError (wrapped by Ray Data
    when it surfaces during execution); with `"skip"` bad samples are counted in the report.
    """
    import ray

    if on_bad_sample not in ("error", "skip"):
        raise ValueError(f"on_bad_sample must be 'error' or 'skip'; got {on_bad_sample!r}")
    if source == "bundled":
        source, fmt = str(bundled_path(split)), "parquet"
    fmt = detect_format(source) if fmt == "auto" else fmt
    if fmt != "hub" and not os.path.exists(source):
        raise DataSourceError(f"data source not found: {source}")
    if not ray.is_initialized():
        ray.init(log_to_driver=True)
    raw, base_dir = _open_dataset(source, fmt, split)
    counter = _make_counter_class().options(name=f"medix_skip_counter_{uuid.uuid4().hex[:8]}").remote()
    validator = _Validator(
        on_bad_sample=on_bad_sample,
        counter=counter,
        keys={"prompt_key": prompt_key, "answer_key": answer_key, "image_key": image_key},
        tags=list(tags or MODALITY_TAGS),
        base_dir=base_dir,
        verify_images=verify_images,
        text_only=text_only,
    )
    ds = raw.map_batches(validator, batch_format="pyarrow", batch_size=64, num_cpus=0.25)
    return ds, ReadReport(source=source, split=split, _counter=counter)


def read_samples_from_config(cfg: DataConfig, split: str = "train") -> tuple[ray.data.Dataset, ReadReport]:
    """Returns read_samples for the config's train or test source."""
    source = cfg.train if split == "train" else cfg.test
    return read_samples(
        source,
        split=split,
        fmt=cfg.format,
        on_bad_sample=cfg.on_bad_sample,
        prompt_key=cfg.prompt_key,
        answer_key=cfg.answer_key,
        image_key=cfg.image_key,
        tags=cfg.modalities,
        text_only=cfg.text_only,
    )


def iter_validated(ds: ray.data.Dataset, report: ReadReport) -> Iterator[dict[str, Any]]:
    """Yields the dataset's rows; a bad sample in `error` mode raises its SampleError (not Ray's wrapper)."""
    try:
        yield from ds.iter_rows()
    except SampleError:
        raise
    except Exception as exc:
        error = report.first_error()
        if error is None:
            raise
        raise error from exc


def take_samples(ds: ray.data.Dataset, report: ReadReport, limit: int = 0) -> list[Sample]:
    """Returns up to `limit` Samples (0: all) of a validated dataset, raising bad samples by name."""
    samples = []
    for row in iter_validated(ds.limit(limit) if limit > 0 else ds, report):
        samples.append(Sample.from_row(row))
    return samples

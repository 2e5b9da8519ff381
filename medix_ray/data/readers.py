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

import json
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
from medix_ray.environment.ray_init import init_ray

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
        """Returns {"read", "valid", "excluded", "excluded_reasons": {reason: n}, "skipped", "reasons": {reason: n},
        "examples": [...]}."""
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
            "data %s (%s): read %d, valid %d, excluded by config %d %s, skipped %d %s",
            self.source,
            self.split,
            s["read"],
            s["valid"],
            s["excluded"],
            s["excluded_reasons"] or "",
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
            self.excluded: Counter[str] = Counter()  # valid samples the config leaves out, by reason
            self.reasons: Counter[str] = Counter()
            self.examples: list[str] = []

        def add(self, read: int, valid: int, excluded: dict[str, int], errors: list[tuple[str, str, str]]) -> None:
            self.read += read
            self.valid += valid
            self.excluded.update(excluded)
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
                # valid, but left out by the config: text_only (data.text_only), prompt_too_long
                # (data.max_prompt_length)
                "excluded": sum(self.excluded.values()),
                "excluded_reasons": dict(self.excluded),
                "skipped": self.read - self.valid - sum(self.excluded.values()),
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
        length_check: Any = None,
    ):
        self.on_bad_sample = on_bad_sample
        self.counter = counter
        self.keys = keys
        self.tags = tags
        self.base_dir = base_dir
        self.verify_images = verify_images
        self.text_only = text_only
        self.length_check = length_check  # a PromptLengthCheck, or None

    def __call__(self, batch: pa.Table) -> pa.Table:
        import ray

        rows, errors, excluded = [], [], Counter()
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
                    excluded["text_only"] += 1
                elif self.length_check is not None and self.length_check.exceeds(Sample.from_row(row)):
                    excluded["prompt_too_long"] += 1
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


class DataFileError(DataSourceError):
    """A data file cannot be read (corrupt parquet, truncated arrow, undecodable jsonl); names the file and why."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"data file {path} cannot be read: {reason}")

    def __reduce__(self):  # keeps the fields when Ray ships the error between processes
        return (type(self), (self.path, self.reason))


def _check_parquet(files: list[Path]) -> None:
    """Raises DataFileError for the first file whose parquet footer (schema, row groups) does not read."""
    import pyarrow.parquet as pq

    for f in files:
        try:
            pq.read_metadata(f)
        except (pa.ArrowException, OSError) as exc:
            raise DataFileError(f, f"not a readable parquet file ({exc})") from exc


def _check_jsonl(files: list[Path]) -> None:
    """Raises DataFileError naming the file and line of the first line that is not UTF-8 JSON of one object."""
    for f in files:
        with open(f, "rb") as fh:
            for n, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8")
                    if not line.strip():
                        continue
                    row = json.loads(line)
                except UnicodeDecodeError as exc:
                    raise DataFileError(f, f"line {n} is not UTF-8 ({exc})") from exc
                except json.JSONDecodeError as exc:
                    raise DataFileError(f, f"line {n} is not valid JSON ({exc})") from exc
                if not isinstance(row, dict):
                    raise DataFileError(f, f"line {n} is a JSON {type(row).__name__}, not an object (one row a line)")


def load_from_disk(source: str) -> Any:
    """Returns `datasets.load_from_disk(source)`; an unreadable arrow file raises DataFileError naming it."""
    import datasets

    try:
        return datasets.load_from_disk(source)
    except Exception as exc:  # datasets surfaces arrow, json and OS errors as they come
        for f in sorted(Path(source).rglob("*.arrow")):
            try:
                with pa.memory_map(str(f)) as stream:
                    pa.ipc.open_stream(stream).read_all()
            except (pa.ArrowException, OSError) as file_exc:
                raise DataFileError(f, f"not a readable arrow file ({file_exc})") from exc
        raise DataFileError(source, f"datasets.load_from_disk failed ({type(exc).__name__}: {exc})") from exc


def _data_files(source: str, fmt: str) -> list[Path]:
    """Returns the files a parquet or jsonl source reads."""
    path = Path(source)
    if not path.is_dir():
        return [path]
    return sorted(path.rglob("*.parquet")) if fmt == "parquet" else sorted(path.glob("*.jsonl"))


def check_readable(source: str, fmt: str) -> None:
    """Raises DataFileError for the first unreadable file of a local parquet or jsonl source.

    Checked on the driver before reading (parquet footers, every jsonl line): Ray Data reads lazily,
    and a corrupt file would otherwise fail later, on a worker, without its name.
    """
    if fmt == "parquet":
        _check_parquet(_data_files(source, fmt))
    elif fmt == "jsonl":
        _check_jsonl(_data_files(source, fmt))


def check_config_sources(cfg: DataConfig) -> None:
    """Raises DataSourceError for a missing train or test source, DataFileError for an unreadable file.

    For commands that start other work before they read (training): the bad file is named up front.
    """
    for source in dict.fromkeys((cfg.train, cfg.test)):
        if source != "bundled":
            check_readable(source, detect_format(source) if cfg.format == "auto" else cfg.format)


def _open_dataset(source: str, fmt: str, split: str) -> tuple[ray.data.Dataset, str | None]:
    """Returns the raw Ray Dataset of a source and the folder its image paths resolve against (None: hub)."""
    import ray.data

    path = Path(source)
    base = str(path if path.is_dir() else path.parent)
    if fmt == "parquet":
        return ray.data.read_parquet(source), base
    if fmt == "jsonl":
        return ray.data.read_json([str(f) for f in _data_files(source, fmt)], lines=True), base
    if fmt == "hf_disk":
        import datasets

        loaded = load_from_disk(source)
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataSourceError(f"data source {source}: no split '{split}'; it has {sorted(loaded)}")
            loaded = loaded[split]
        return ray.data.from_arrow(_undecoded_arrow(loaded)), base
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
    length_check: Any = None,
) -> tuple[ray.data.Dataset, ReadReport]:
    """Returns (validated Dataset in SAMPLE_SCHEMA, its ReadReport); starts Ray if needed.

    With `on_bad_sample="error"` the first bad sample raises SampleError (wrapped by Ray Data
    when it surfaces during execution); with `"skip"` bad samples are counted in the report.
    """
    if on_bad_sample not in ("error", "skip"):
        raise ValueError(f"on_bad_sample must be 'error' or 'skip'; got {on_bad_sample!r}")
    if source == "bundled":
        source, fmt = str(bundled_path(split)), "parquet"
    fmt = detect_format(source) if fmt == "auto" else fmt
    if fmt != "hub" and not os.path.exists(source):
        raise DataSourceError(f"data source not found: {source}")
    check_readable(source, fmt)
    init_ray(log_to_driver=True)  # unless connected: a local cluster sized for this machine
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
        length_check=length_check,
    )
    ds = raw.map_batches(validator, batch_format="pyarrow", batch_size=64, num_cpus=0.25)
    return ds, ReadReport(source=source, split=split, _counter=counter)


def read_samples_from_config(
    cfg: DataConfig, split: str = "train", length_check: Any = None
) -> tuple[ray.data.Dataset, ReadReport]:
    """Returns read_samples for the config's train or test source; `length_check` (a
    `medix_ray.data.prompt_length.PromptLengthCheck`) leaves out prompts over `data.max_prompt_length`."""
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
        length_check=length_check,
    )


def iter_validated(ds: ray.data.Dataset, report: ReadReport) -> Iterator[dict[str, Any]]:
    """Yields the dataset's rows; a bad sample in `error` mode raises its SampleError (not Ray's wrapper)."""
    try:
        yield from ds.iter_rows()
    except (SampleError, DataSourceError):
        raise
    except Exception as exc:
        error = report.first_error()
        if error is not None:
            raise error from exc
        cause = _read_failure(exc)
        if cause is None:
            raise
        # A file that passed the driver's checks but fails to decode on a worker (a damaged data page).
        raise DataFileError(report.source, f"{type(cause).__name__}: {str(cause).splitlines()[0]}") from exc


def _read_failure(exc: BaseException) -> BaseException | None:
    """Returns the arrow, decoding or OS error in an exception's chain (Ray wraps worker errors), or None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (pa.ArrowException, UnicodeDecodeError, json.JSONDecodeError)):
            return current
        current = current.__cause__ or current.__context__
    return None


def take_samples(ds: ray.data.Dataset, report: ReadReport, limit: int = 0) -> list[Sample]:
    """Returns up to `limit` Samples (0: all) of a validated dataset, raising bad samples by name."""
    samples = []
    for row in iter_validated(ds.limit(limit) if limit > 0 else ds, report):
        samples.append(Sample.from_row(row))
    return samples

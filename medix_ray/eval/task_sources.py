"""A task's source rows: from the hub (`datasets.load_dataset`, config after config) or from a local copy.

    rows = read_local(spec, Path("data/eval") / spec.name)      # or read_hub(spec)

A local copy is one of `LAYOUTS`; a folder holding several splits gives the spec's split (`SPLIT_NAMES` in a
folder or file name). A missing or unreadable copy raises `TaskDataError` naming the task and the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medix_ray.data.paths import PathEscapeError, confine
from medix_ray.eval.task_spec import TaskDataError, TaskSpec

LAYOUTS = (
    "parquet file(s), jsonl or json file(s), a datasets.save_to_disk folder (dataset_info.json / state.json), "
    "or an image folder (metadata.jsonl with a file_name column, plus the images); a task with several hub "
    "configs also takes one such folder per config, <task>/<config>/"
)
SPLIT_NAMES = ("train", "validation", "valid", "dev", "test")
SPLIT_NAMES = ("train", "validation", "valid", "dev", "test")


def _split_of(path: Path, root: Path) -> str | None:
    for part in (*path.relative_to(root).parent.parts, path.name.partition(".")[0]):
        for name in SPLIT_NAMES:
            if part == name or part.startswith((name + "-", name + "_")):
                return name
    return None


def _split_files(spec: TaskSpec, files: list[Path], root: Path) -> list[Path]:
    """Returns the files of the spec's split; all of them when no file names a split."""
    splits = {f: _split_of(f, root) for f in files}
    if not any(splits.values()):
        return files
    chosen = [f for f, s in splits.items() if s == spec.split]
    if not chosen:
        raise TaskDataError(
            f"task {spec.name!r}: {root} holds splits {sorted({s for s in splits.values() if s})}, "
            f"none for split {spec.split!r}"
        )
    return chosen


def _dataset_rows(spec: TaskSpec, ds: Any) -> list[dict[str, Any]]:
    """Returns the rows of a `datasets.Dataset`, images left encoded ({bytes, path}) instead of decoded to PIL."""
    import datasets

    for column, feature in ds.features.items():  # every image column: MMMU's unused image_2..7 stay undecoded too
        if isinstance(feature, datasets.Image) and feature.decode:
            ds = ds.cast_column(column, datasets.Image(decode=False))
    return ds.to_list()


def _read_json(spec: TaskSpec, path: Path) -> list[dict[str, Any]]:
    """Returns the rows of a jsonl file (one object a line) or a json file (a list of objects)."""
    try:
        text = path.read_text(encoding="utf-8")
        rows = [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" else None
        rows = json.loads(text) if rows is None else rows
    except (OSError, ValueError) as exc:
        raise TaskDataError(f"task {spec.name!r}: cannot read {path}: {exc}") from exc
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise TaskDataError(f"task {spec.name!r}: {path} is not a list of row objects")
    return rows


def read_local(spec: TaskSpec, task_dir: Path) -> list[dict[str, Any]]:
    """Returns the rows of a local copy in one of LAYOUTS; image-folder file names become absolute paths.

    A task with several configs is read from `<task_dir>/<config>/`, one folder per config in config order, when
    those folders are there, else from `task_dir` as a whole (the configs' rows already concatenated).
    """
    if not task_dir.is_dir():
        raise TaskDataError(f"task {spec.name!r}: no local copy at {task_dir}; expected there: {LAYOUTS}")
    if len(spec.configs) > 1:
        present = [c for c in spec.configs if (task_dir / str(c)).is_dir()]
        if present and len(present) < len(spec.configs):
            missing = [c for c in spec.configs if c not in present]
            raise TaskDataError(f"task {spec.name!r}: {task_dir} has folders for configs {present} but not {missing}")
        if present:
            return [row for config in spec.configs for row in _read_folder(spec, task_dir / str(config))]
    return _read_folder(spec, task_dir)


def _read_folder(spec: TaskSpec, task_dir: Path) -> list[dict[str, Any]]:
    if any((task_dir / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
        import datasets

        from medix_ray.data.readers import load_from_disk

        ds = load_from_disk(str(task_dir))  # an unreadable arrow file is a DataFileError naming it
        if isinstance(ds, datasets.DatasetDict):
            if spec.split not in ds:
                raise TaskDataError(f"task {spec.name!r}: {task_dir} has splits {list(ds)}, not {spec.split!r}")
            ds = ds[spec.split]
        return _dataset_rows(spec, ds)
    if metadata := sorted(task_dir.rglob("metadata.jsonl")):
        rows = []
        for meta in _split_files(spec, metadata, task_dir):
            for row in _read_json(spec, meta):
                if "file_name" in row:  # as HF imagefolder does: file_name becomes the image column
                    try:
                        row[spec.image or "image"] = confine(meta.parent.resolve(), str(row.pop("file_name")))
                    except PathEscapeError as exc:
                        raise TaskDataError(f"task {spec.name!r}: {meta}: {exc}") from exc
                rows.append(row)
        return rows
    if parquet := sorted(task_dir.rglob("*.parquet")):
        import pyarrow.parquet as pq

        from medix_ray.data.readers import check_readable

        files = _split_files(spec, parquet, task_dir)
        for f in files:
            check_readable(str(f), "parquet")  # a corrupt file is a DataFileError naming it
        return [row for f in files for row in pq.read_table(f).to_pylist()]
    if text := sorted([*task_dir.rglob("*.jsonl"), *task_dir.rglob("*.json")]):
        return [row for f in _split_files(spec, text, task_dir) for row in _read_json(spec, f)]
    raise TaskDataError(f"task {spec.name!r}: {task_dir} holds no readable data; expected there: {LAYOUTS}")


def read_hub(spec: TaskSpec) -> list[dict[str, Any]]:
    """Returns the rows of the task's split, config after config."""
    import datasets

    rows: list[dict[str, Any]] = []
    for config in spec.configs:
        try:
            ds = datasets.load_dataset(spec.hub_id, config, split=spec.split, revision=spec.revision)
        except Exception as exc:  # network, auth, missing config: all end the same way
            raise TaskDataError(
                f"task {spec.name!r}: cannot load {spec.hub_id} (config {config}, split {spec.split}) from the hub: "
                f"{exc}; for an offline run pass data_dir with a local copy in <data_dir>/{spec.name}/"
            ) from exc
        rows += _dataset_rows(spec, ds)
    return rows

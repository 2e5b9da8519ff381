"""The evaluation task registry (the 18 MediX-R1 benchmarks) and how a task becomes a list of `EvalItem`s.

    registry = load_registry()                        # the packaged medix_ray/eval/configs/tasks.yaml, validated
    specs = select_tasks(["vlm"], registry)            # or "all", "llm", "medqa,pubmedqa"
    items = load_task(specs[0], data_dir="data/eval", limit=50)

A task is read from the hub (`datasets.load_dataset(hub_id, config, split=...)`, once per config when it has
several) or, with `data_dir`, from a local copy in `<data_dir>/<task>/` (`task_sources.LAYOUTS`). A wrong column
mapping or a missing copy raises `TaskDataError`; a problem of one row (a missing or undecodable image, an answer
naming no option) is kept on its item as `EvalItem.error`, which the report counts as an input error — nothing is
dropped silently (rows a task's declared `filters` leave out are counted in the log).

This module holds the registry (validated into `TaskSpec`s, medix_ray/eval/task_spec.py) and the items of a task;
the rows come from medix_ray/eval/task_sources.py, the questions from medix_ray/eval/task_questions.py and the
images from medix_ray/eval/task_images.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from medix_ray.eval.configs import packaged
from medix_ray.eval.records import KINDS, EvalItem
from medix_ray.eval.task_images import image_base, read_image
from medix_ray.eval.task_questions import build_question, column_value, mapped_columns
from medix_ray.eval.task_sources import read_hub, read_local
from medix_ray.eval.task_spec import ANSWER_FORMATS, GROUPS, LETTERS, LIST_ENTRIES, TEMPLATES, TaskDataError, TaskSpec

logger = logging.getLogger(__name__)

REGISTRY_FILE = "tasks.yaml"  # in the package: medix_ray/eval/configs/tasks.yaml


_REQUIRED = ("hub_id", "split", "kind", "template", "group", "answer")
_CHOICES = {
    "kind": KINDS,
    "template": TEMPLATES,
    "group": GROUPS,
    "answer_format": ANSWER_FORMATS,
    "list_entries": LIST_ENTRIES,
}
# Keys that take a list of strings (or, for these, also one string).
_LIST_KEYS = ("config", "question", "choices", "fixed_choices")


def _spec_from_entry(name: str, entry: Any) -> TaskSpec:
    """Returns the validated spec of one registry entry; raises TaskDataError naming the task and the key."""
    if not isinstance(entry, Mapping):
        raise TaskDataError(f"task {name!r}: expected a mapping of keys, got {type(entry).__name__}")
    known = [f.name for f in fields(TaskSpec) if f.name != "name"]
    values = dict(entry)
    for key, value in values.items():
        if key not in known:
            raise TaskDataError(f"task {name!r}: unknown key {key!r}; known keys: {', '.join(known)}")
        if key in (*_LIST_KEYS, "filters"):
            continue
        if value is not None and not isinstance(value, str):
            raise TaskDataError(f"task {name!r}: key {key!r} must be a string, got {value!r}")
    for key in _REQUIRED:
        if not values.get(key):
            raise TaskDataError(f"task {name!r}: key {key!r} is required")
    for key, allowed in _CHOICES.items():
        if key in values and values[key] not in allowed:
            raise TaskDataError(f"task {name!r}: key {key!r} is {values[key]!r}; expected one of {', '.join(allowed)}")
    for key in _LIST_KEYS:
        value = values.get(key)
        if isinstance(value, list):
            if not value or not all(isinstance(v, str) and v for v in value):
                raise TaskDataError(f"task {name!r}: key {key!r} must be a non-empty list of strings, got {value!r}")
            values[key] = tuple(value)
        elif value is not None and not (key != "fixed_choices" and isinstance(value, str)):
            raise TaskDataError(f"task {name!r}: key {key!r} must be a string or a list of strings, got {value!r}")
    values["fixed_choices"] = values.get("fixed_choices") or ()
    filters = values.get("filters") or {}
    if not isinstance(filters, Mapping):
        raise TaskDataError(f"task {name!r}: key 'filters' must map column to value, got {filters!r}")
    values["filters"] = tuple((str(k), str(v)) for k, v in filters.items())
    for key in ("instruction", "image_dir", "image_url", "modality"):
        values[key] = values.get(key) or ""
    spec = TaskSpec(name=name, **values)

    def bad(key: str, why: str) -> TaskDataError:
        return TaskDataError(f"task {name!r}: key {key!r}: {why}")

    if spec.group == "vlm" and not spec.image:
        raise bad("image", "a vlm task needs an image column")
    if spec.group == "llm" and spec.image:
        raise bad("image", "an llm task has no image; use group: vlm")
    if not spec.question and not spec.instruction:
        raise bad("question", "give a question column, an instruction, or both")
    if spec.image_url and urlsplit(spec.image_url).scheme not in ("http", "https"):
        raise bad("image_url", f"{spec.image_url!r} is not an http(s) URL")
    if spec.choices and spec.fixed_choices:
        raise bad("fixed_choices", "give either choices or fixed_choices, not both")
    if len(spec.fixed_choices) > len(LETTERS) or (isinstance(spec.choices, tuple) and len(spec.choices) > len(LETTERS)):
        raise bad("choices", f"at most {len(LETTERS)} options (A–J)")
    if spec.answer_format in ("index", "letter") and not (spec.choices or spec.fixed_choices):
        raise bad("answer_format", f"{spec.answer_format!r} needs choices")
    return spec


def load_registry(path: str | Path | None = None) -> dict[str, TaskSpec]:
    """Returns the task specs by name, in file order; default: the packaged medix_ray/eval/configs/tasks.yaml."""
    source = Path(path) if path else packaged(REGISTRY_FILE)
    if not source.is_file():
        raise TaskDataError(f"task registry not found: {source}")
    doc = yaml.safe_load(source.read_text(encoding="utf-8"))
    if not isinstance(doc, Mapping) or not isinstance(doc.get("tasks"), Mapping):
        raise TaskDataError(f"task registry {source}: expected a top-level 'tasks:' mapping")
    # Top-level keys starting with "_" hold YAML anchors (shared MMLU keys); anything else is a typo.
    extra = [k for k in doc if k != "tasks" and not str(k).startswith("_")]
    if extra:
        raise TaskDataError(f"task registry {source}: unknown top-level keys {extra}; expected 'tasks' (and _anchors)")
    return {str(name): _spec_from_entry(str(name), entry) for name, entry in doc["tasks"].items()}


def select_tasks(selection: str | Sequence[str], registry: Mapping[str, TaskSpec]) -> list[TaskSpec]:
    """Returns the selected specs in registry order: "all", "llm", "vlm" or task names (a list or comma-separated)."""
    if isinstance(selection, str):
        selection = [selection]
    wanted: set[str] = set()
    for token in (t.strip() for part in selection for t in str(part).split(",")):
        if token == "all":
            wanted.update(registry)
        elif token in GROUPS:
            wanted.update(name for name, spec in registry.items() if spec.group == token)
        elif token in registry:
            wanted.add(token)
        elif token:
            raise TaskDataError(f"unknown task {token!r}; expected all, llm, vlm or one of: {', '.join(registry)}")
    if not wanted:
        raise TaskDataError(f"no task selected from {list(selection)!r}; expected all, llm, vlm or task names")
    return [spec for name, spec in registry.items() if name in wanted]


def _item(spec: TaskSpec, k: int, row: Mapping[str, Any], base: Path | None) -> EvalItem:
    """Returns the item of source row k; a problem of this row alone is kept as the item's error."""
    common = {"id": f"{spec.name}_{k}", "task": spec.name, "kind": spec.kind, "template": spec.template}
    modality = spec.modality
    if spec.modality_column and row.get(spec.modality_column):
        modality = str(row[spec.modality_column])
    try:
        question, answer, choices, letter = build_question(spec, row)
    except TaskDataError as exc:
        return EvalItem(**common, group=spec.group, question="", answer="", modality=modality, error=str(exc))
    image, image_path, error = None, "", ""
    if spec.image and base is not None:
        image, image_path, error = read_image(spec, row.get(spec.image), base)
    return EvalItem(
        **common,
        group=spec.group,
        question=question,
        answer=answer,
        modality=modality,
        choices=choices,
        answer_letter=letter,
        image=image,
        image_path=image_path,
        error=error,
    )


def load_task(
    spec: TaskSpec,
    data_dir: str | Path | None = None,
    limit: int = 0,
    *,
    image_root: str | Path | None = None,
) -> list[EvalItem]:
    """Returns the task's items in source order after its filters (ids `<task>_<k>`, k from 0), the first `limit`.

    `data_dir`: read `<data_dir>/<task>/` instead of the hub. `image_root`: where relative image paths resolve
    (default `<data_dir>/<task>/<image_dir>`, or `$MEDIX_RAY_HOME/eval/<task>/<image_dir>` for a hub read);
    images fetched from `spec.image_url` or from URL cells are stored there too.
    """
    task_dir = Path(data_dir) / spec.name if data_dir is not None else None
    rows = read_local(spec, task_dir) if task_dir is not None else read_hub(spec)
    if rows:  # a wrong column mapping is the registry's fault, not a row's: raise once, before anything is built
        for column in mapped_columns(spec):
            column_value(spec, rows[0], column)
    if spec.filters:
        read = len(rows)
        for column, value in spec.filters:
            rows = [row for row in rows if str(row.get(column)) == value]
        logger.info("task %s: its filters %s keep %d of %d rows", spec.name, dict(spec.filters), len(rows), read)
    if limit > 0:
        rows = rows[:limit]
    base = image_base(spec, task_dir, image_root) if spec.image else None
    items = [_item(spec, k, row, base) for k, row in enumerate(rows)]
    if failed := [item for item in items if item.error]:
        logger.warning(
            "task %s: %d of %d items cannot be asked, e.g. %s", spec.name, len(failed), len(items), failed[0].error
        )
    return items

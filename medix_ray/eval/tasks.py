"""The evaluation task registry (the 18 MediX-R1 benchmarks) and how a task becomes a list of `EvalItem`s.

    registry = load_registry()                        # the packaged medix_ray/eval/configs/tasks.yaml, validated
    specs = select_tasks(["vlm"], registry)            # or "all", "llm", "medqa,pubmedqa"
    items = load_task(specs[0], data_dir="data/eval", limit=50)

A task is read from the hub (`datasets.load_dataset(hub_id, config, split=...)`, once per config when it has
several) or, with `data_dir`, from a local copy in `<data_dir>/<task>/` (see `LAYOUTS`). A wrong column mapping or
a missing copy raises `TaskDataError`; a problem of one row (a missing or undecodable image, an answer naming no
option) is kept on its item as `EvalItem.error`, which the report counts as an input error — nothing is dropped
silently (rows a task's declared `filters` leave out are counted in the log).
"""

from __future__ import annotations

import ast
import io
import json
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from medix_ray.data.paths import PathEscapeError, confine
from medix_ray.eval.configs import packaged
from medix_ray.eval.records import KINDS, EvalItem

logger = logging.getLogger(__name__)

REGISTRY_FILE = "tasks.yaml"  # in the package: medix_ray/eval/configs/tasks.yaml
LETTERS = "ABCDEFGHIJ"
TEMPLATES = ("base", "mimic")  # the judge templates (docs/method.md)
GROUPS = ("llm", "vlm")
ANSWER_FORMATS = ("index", "letter", "text")
LIST_ENTRIES = ("first", "all")
LAYOUTS = (
    "parquet file(s), jsonl or json file(s), a datasets.save_to_disk folder (dataset_info.json / state.json), "
    "or an image folder (metadata.jsonl with a file_name column, plus the images); a task with several hub "
    "configs also takes one such folder per config, <task>/<config>/"
)
SPLIT_NAMES = ("train", "validation", "valid", "dev", "test")
# MIMIC-CXR-JPG is credentialed. The user name and password are read from the environment only (never from a
# config or a command line), under our spelling or the reference's (eval/README.md: PHYSIONET_UNAME/PWD); the
# first one set wins.
CREDENTIAL_ENV = {
    "username": ("PHYSIONET_USERNAME", "PHYSIONET_UNAME"),
    "password": ("PHYSIONET_PASSWORD", "PHYSIONET_PWD"),
}


class TaskDataError(ValueError):
    """A registry entry, a task selection or a task's data is not as expected; the message names the task."""


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark: where it lives and how a source row becomes a question (keys: configs/tasks.yaml's header)."""

    name: str
    hub_id: str
    split: str
    kind: str  # binary | rubric
    template: str  # base | mimic
    group: str  # llm | vlm
    answer: str  # column
    config: str | tuple[str, ...] | None = None  # several: their rows concatenated in this order
    revision: str | None = None
    answer_format: str = "text"  # index | letter | text
    answer_detail: str | None = None  # column appended to the answer after a newline
    instruction: str = ""  # fixed text placed first in the question
    question: str | tuple[str, ...] | None = None  # a column; several: labelled sections "<Column>:\n<value>"
    list_entries: str = "first"  # a list cell in a question column: its first entry | all, one per line
    choices: str | tuple[str, ...] | None = None  # a list/dict column (or its text), or option columns
    fixed_choices: tuple[str, ...] = ()
    image: str | None = None  # column: an image, bytes, a path, or an http(s) URL
    image_dir: str = ""  # relative image paths resolve against <task folder>/<image_dir>
    image_archive: str | None = None  # zip holding the image_dir tree
    image_url: str = ""  # base URL of the credentialed image host (credentials from CREDENTIAL_ENV)
    modality: str = ""
    modality_column: str | None = None
    filters: tuple[tuple[str, str], ...] = ()  # (column, value): rows kept

    @property
    def configs(self) -> tuple[str | None, ...]:
        """Returns the hub configs read, in order: (None,) for a dataset without configs."""
        if isinstance(self.config, tuple):
            return self.config
        return (self.config,)

    @property
    def question_columns(self) -> tuple[str, ...]:
        if self.question is None:
            return ()
        return self.question if isinstance(self.question, tuple) else (self.question,)


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


def _column(spec: TaskSpec, row: Mapping[str, Any], column: str) -> Any:
    if column not in row:
        raise TaskDataError(
            f"task {spec.name!r}: column {column!r} is not in the data; columns: {', '.join(sorted(map(str, row)))}"
        )
    return row[column]


def _mapped_columns(spec: TaskSpec) -> list[str]:
    columns = [*spec.question_columns, spec.answer, spec.answer_detail, spec.image, spec.modality_column]
    columns += list(spec.choices) if isinstance(spec.choices, tuple) else [spec.choices]
    return [c for c in columns if c] + [c for c, _ in spec.filters]


def _choices(spec: TaskSpec, row: Mapping[str, Any]) -> tuple[str, ...]:
    """Returns the option texts in letter order, "" for a None option, trailing empties dropped."""
    if spec.fixed_choices:
        return spec.fixed_choices
    if spec.choices is None:
        return ()
    if isinstance(spec.choices, tuple):
        values = [_column(spec, row, c) for c in spec.choices]
    else:
        value = _column(spec, row, spec.choices)
        if isinstance(value, Mapping):  # e.g. usmle_sa's options struct {"A": ..., ..., "I": None}
            keys = [str(k).strip().upper() for k in value]
            if all(len(k) == 1 and k in LETTERS for k in keys):
                by_letter = dict(zip(keys, value.values(), strict=True))
                values = [by_letter.get(letter) for letter in LETTERS[: max(LETTERS.index(k) for k in keys) + 1]]
            else:
                values = list(value.values())
        elif isinstance(value, list | tuple) or hasattr(value, "tolist"):
            values = list(value)
        elif isinstance(value, str):  # a list written out as text, e.g. MMMU's options "['Apnea', 'Hypoxia']"
            values = _list_text(spec, value)
        else:
            raise TaskDataError(
                f"task {spec.name!r}: choices column {spec.choices!r} holds {type(value).__name__}; "
                "expected a list or a dict keyed A–J"
            )
    texts = ["" if v is None else str(v) for v in values]
    while texts and not texts[-1]:
        texts.pop()
    if len(texts) > len(LETTERS):
        raise TaskDataError(f"task {spec.name!r}: {len(texts)} options; at most {len(LETTERS)} (A–J)")
    return tuple(texts)


def _answer(spec: TaskSpec, row: Mapping[str, Any], choices: tuple[str, ...]) -> tuple[str, str]:
    """Returns (answer text, answer letter or "")."""
    raw = _column(spec, row, spec.answer)
    if raw is None or raw == "":
        raise TaskDataError(f"task {spec.name!r}: answer column {spec.answer!r} is empty")
    if spec.answer_format == "text":
        answer = str(raw)
        wanted = answer.strip().casefold()
        letter = next((LETTERS[i] for i, c in enumerate(choices) if c and c.strip().casefold() == wanted), "")
    else:
        text = str(raw).strip()
        if spec.answer_format == "index":
            index = int(text) if text.lstrip("-").isdigit() else -1
        else:
            index = LETTERS.index(text.upper()) if len(text) == 1 and text.upper() in LETTERS else -1
        if not 0 <= index < len(choices) or not choices[index]:
            raise TaskDataError(
                f"task {spec.name!r}: answer {raw!r} in column {spec.answer!r} ({spec.answer_format}) "
                f"names no option; options: {list(choices)}"
            )
        answer, letter = choices[index], LETTERS[index]
    if spec.answer_detail:
        detail = _column(spec, row, spec.answer_detail)
        if detail:
            answer = f"{answer}\n{detail}"
    return answer, letter


def _list_text(spec: TaskSpec, text: str) -> list[Any]:
    """Returns the list a choices cell spells out as Python or JSON text; raises TaskDataError otherwise."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    if not isinstance(value, list | tuple):
        raise TaskDataError(
            f"task {spec.name!r}: choices column {spec.choices!r} holds text that is not a list: {text[:80]!r}"
        )
    return list(value)


def _cell_text(spec: TaskSpec, row: Mapping[str, Any], column: str) -> str:
    """Returns a question column's text: a list cell gives its first entry or all of them (`list_entries`)."""
    value = _column(spec, row, column)
    if isinstance(value, list | tuple) or hasattr(value, "tolist"):
        entries = [str(e) for e in list(value) if e is not None and str(e)]
        value = (entries[:1] if spec.list_entries == "first" else entries) or None
        value = "\n".join(value) if value else None
    if value is None:
        raise TaskDataError(f"task {spec.name!r}: question column {column!r} is empty")
    return str(value)


def _section_label(column: str) -> str:
    """Returns a question section's label as the reference writes it: CONTEXTS -> Contexts, report -> Report."""
    return column.lower().capitalize()


def build_question(spec: TaskSpec, row: Mapping[str, Any]) -> tuple[str, str, tuple[str, ...], str]:
    """Returns (question text, answer text, option texts in letter order, answer letter or "") of one source row.

    The text is the instruction, then the question: one column as it is, or, for a list of columns, one
    labelled section per column ("Contexts:\n<first paragraph>\n\nQuestion:\n<question>", the reference's
    layout); blank lines between the parts; then "Choices:" and one "A. <option>" line per option.
    """
    parts = [spec.instruction] if spec.instruction else []
    if isinstance(spec.question, tuple):
        parts += [f"{_section_label(c)}:\n{_cell_text(spec, row, c)}" for c in spec.question]
    elif spec.question:
        parts.append(_cell_text(spec, row, spec.question))
    text = "\n\n".join(parts)
    choices = _choices(spec, row)
    if choices:
        text += "\n\nChoices:\n" + "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices) if c)
    answer, letter = _answer(spec, row, choices)
    return text, answer, choices, letter


# ---- reading: hub or local copy -------------------------------------------------------------------------------


def _split_of(path: Path, root: Path) -> str | None:
    for part in (*path.relative_to(root).parent.parts, path.name.split(".")[0]):
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


def _read_local(spec: TaskSpec, task_dir: Path) -> list[dict[str, Any]]:
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


def _read_hub(spec: TaskSpec) -> list[dict[str, Any]]:
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


# ---- images ---------------------------------------------------------------------------------------------------


def _image_base(spec: TaskSpec, task_dir: Path | None, image_root: str | Path | None) -> Path:
    """Returns the folder relative image paths resolve against; unpacks the task's image archive there if needed."""
    if image_root:
        return Path(image_root)
    from medix_ray.models import medix_home

    root = task_dir if task_dir is not None else medix_home() / "eval" / spec.name
    base = root / spec.image_dir
    if spec.image_archive and not base.exists():
        archive = root / spec.image_archive
        if not archive.is_file() and task_dir is None:
            from huggingface_hub import hf_hub_download

            try:
                archive = Path(
                    hf_hub_download(spec.hub_id, spec.image_archive, repo_type="dataset", revision=spec.revision)
                )
            except Exception as exc:
                raise TaskDataError(
                    f"task {spec.name!r}: cannot fetch {spec.image_archive} from {spec.hub_id}: {exc}"
                ) from exc
        if archive.is_file():
            root.mkdir(parents=True, exist_ok=True)
            unpacked = Path(tempfile.mkdtemp(dir=root, prefix=".unpack-"))
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(unpacked)
            # The archive holds either the image_dir folder itself (imgs/...) or its contents.
            inner = unpacked / spec.image_dir if spec.image_dir and (unpacked / spec.image_dir).is_dir() else unpacked
            inner.rename(base)
            shutil.rmtree(unpacked, ignore_errors=True)
    return base


def _credentials() -> tuple[str, str]:
    """Returns (user, password) from the environment, each from the first of its CREDENTIAL_ENV names set."""
    first_set = (next((os.environ[n] for n in names if os.environ.get(n)), "") for names in CREDENTIAL_ENV.values())
    user, password = first_set
    return user, password


def _credential_names() -> str:
    spellings = list(zip(*CREDENTIAL_ENV.values(), strict=True))
    return " (or ".join(" and ".join(pair) for pair in spellings) + ")" * (len(spellings) - 1)


def _site(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/"


def _url_cache_path(spec: TaskSpec, url: str) -> PurePosixPath | None:
    """Returns where an image URL is kept under the image root: its path below `image_url` (MIMIC's files/pXX/...),
    or <host>/<path> for a URL elsewhere; None when the URL names no safe relative file path."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    base = urlsplit(spec.image_url) if spec.image_url else None
    if base is not None and parts.netloc == base.netloc and path.startswith(unquote(base.path).rstrip("/") + "/"):
        relative = PurePosixPath(path[len(unquote(base.path).rstrip("/")) + 1 :])
    else:
        relative = PurePosixPath(parts.netloc, path.lstrip("/"))
    if not relative.name or any(p in ("..", "") for p in relative.parts) or relative.is_absolute():
        return None
    return relative


def _fetch(spec: TaskSpec, url: str, dest: Path) -> str:
    """Returns "" once the image at `url` is saved at dest, else why not; the message never holds the password.

    The PhysioNet credentials are sent only to the host of the task's `image_url`, and only after it asks for them
    (HTTP basic auth); another host gets no credentials. Nothing but the image bytes is written.
    """
    handlers: list[urllib.request.BaseHandler] = []
    password = ""
    if spec.image_url and _site(url) == _site(spec.image_url):
        user, password = _credentials()
        if not user or not password:
            return f"image file missing: {dest} (set {_credential_names()} to fetch it from {url})"
        passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        passwords.add_password(None, _site(spec.image_url), user, password)
        handlers.append(urllib.request.HTTPBasicAuthHandler(passwords))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(url, timeout=60) as response:
            data = response.read()
    except Exception as exc:  # HTTP status, DNS, timeout: the item is recorded as an input error
        text = str(exc).replace(password, "***") if password else str(exc)
        return f"image file missing: {dest} (fetching {url} failed: {text})"
    if _checked(data, url)[2]:  # a login page served with status 200 is not kept as the image
        return f"image file missing: {dest} (fetching {url} returned {len(data)} bytes that are not an image)"
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.write_bytes(data)
    partial.replace(dest)
    return ""


def _checked(data: bytes, path: str) -> tuple[bytes | None, str, str]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception as exc:
        return None, path, f"image decode error: {path or '<embedded bytes>'}: {exc}"
    return data, path, ""


def _image(spec: TaskSpec, value: Any, base: Path) -> tuple[bytes | None, str, str]:
    """Returns (encoded image or None, where it came from, error or "") of one image cell.

    A relative path resolves against `base` (fetched from below `image_url` if missing and the task has one); an
    http(s) URL is read from its place under `base` (see `_url_cache_path`), fetched there first if missing.
    """
    if isinstance(value, Mapping):  # HF Image {bytes, path}
        if value.get("bytes") is not None:
            return _checked(bytes(value["bytes"]), str(value.get("path") or ""))
        value = value.get("path")
    if value is None or value == "":
        return None, "", f"no image in column {spec.image!r}"
    if isinstance(value, bytes | bytearray):
        return _checked(bytes(value), "")
    if hasattr(value, "save"):  # a decoded PIL image
        buf = io.BytesIO()
        value.save(buf, format=value.format or "PNG")
        return buf.getvalue(), "", ""
    if not isinstance(value, str | os.PathLike):
        kind = type(value).__name__
        return None, "", f"column {spec.image!r} holds {kind}; expected an image, bytes, a path or a URL"
    url = ""
    if isinstance(value, str) and urlsplit(value).scheme in ("http", "https"):  # MIMIC: a PhysioNet URL
        url = value
        relative = _url_cache_path(spec, url)
        if relative is None:
            return None, url, f"image URL {url} in column {spec.image!r} names no file path"
        path = base / relative
    else:
        relative = Path(value)
        try:  # a row's relative path stays inside the task's image folder (data/paths.py)
            path = relative if relative.is_absolute() else Path(confine(base, str(value)))
        except PathEscapeError as exc:
            return None, str(value), str(exc)
        if spec.image_url and not relative.is_absolute():
            url = spec.image_url.rstrip("/") + "/" + relative.as_posix()
    if not path.is_file() and url:
        if error := _fetch(spec, url, path):
            return None, str(path), error
    try:
        data = path.read_bytes()
    except OSError:
        return None, str(path), f"image file missing: {path}"
    return _checked(data, str(path))


# ---- items ----------------------------------------------------------------------------------------------------


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
        image, image_path, error = _image(spec, row.get(spec.image), base)
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
    rows = _read_local(spec, task_dir) if task_dir is not None else _read_hub(spec)
    if rows:  # a wrong column mapping is the registry's fault, not a row's: raise once, before anything is built
        for column in _mapped_columns(spec):
            _column(spec, rows[0], column)
    if spec.filters:
        read = len(rows)
        for column, value in spec.filters:
            rows = [row for row in rows if str(row.get(column)) == value]
        logger.info("task %s: its filters %s keep %d of %d rows", spec.name, dict(spec.filters), len(rows), read)
    if limit > 0:
        rows = rows[:limit]
    base = _image_base(spec, task_dir, image_root) if spec.image else None
    items = [_item(spec, k, row, base) for k, row in enumerate(rows)]
    if failed := [item for item in items if item.error]:
        logger.warning(
            "task %s: %d of %d items cannot be asked, e.g. %s", spec.name, len(failed), len(items), failed[0].error
        )
    return items

"""The sample record and its validation, in the schema of `MBZUAI/medix-rl-data`.

A row has `id`, `problem` (the question), `solution` (`<TAG>` followed by the reference answer),
`image` (a list of images, possibly empty) and `source`. Validation turns a raw row from any
reader into a normalised row, or raises `SampleError` naming the sample and the field.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from medix_ray.data.modality import MODALITY_TAGS
from medix_ray.data.paths import PathEscapeError, confine

# The normalised table every reader produces; images are {bytes, path} structs as in HF `Image`.
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
SAMPLE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("problem", pa.string()),
        ("solution", pa.string()),
        ("image", pa.list_(IMAGE_TYPE)),
        ("source", pa.string()),
    ]
)

_TAG_RE = re.compile(r"^\s*<([A-Za-z_]+)>\s*(.*)$", re.DOTALL)


class SampleError(ValueError):
    """A sample is malformed; `sample_id` and `field` say which and where."""

    def __init__(self, sample_id: str, field: str, message: str):
        self.sample_id = sample_id
        self.field = field
        self.message = message
        super().__init__(f"sample '{sample_id}': field '{field}': {message}")

    def __reduce__(self):  # keeps the fields when Ray ships the error from a worker to the driver
        return (type(self), (self.sample_id, self.field, self.message))


@dataclass(frozen=True)
class ImageRef:
    """One image, as encoded bytes or a file path; decoded only when `load` is called."""

    data: bytes | None = None
    path: str | None = None

    def load(self, sample_id: str = "?"):
        """Returns the image as an RGB `PIL.Image`; raises SampleError if it cannot be decoded."""
        from PIL import Image, UnidentifiedImageError

        try:
            if self.data is not None:
                img = Image.open(io.BytesIO(self.data))
            elif self.path is not None:
                img = Image.open(self.path)
            else:
                raise SampleError(sample_id, "image", "image has neither bytes nor a path")
            img.load()
        except FileNotFoundError as exc:
            raise SampleError(sample_id, "image", f"image file missing: {self.path}") from exc
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            where = self.path or f"{len(self.data or b'')} bytes"
            raise SampleError(sample_id, "image", f"image cannot be decoded ({where}): {exc}") from exc
        # RGBA (the dataset card's declared mode) and palette images become RGB, as the reference does.
        return img.convert("RGB") if img.mode != "RGB" else img


@dataclass(frozen=True)
class Sample:
    """One training or test item."""

    id: str
    problem: str
    solution: str
    images: tuple[ImageRef, ...] = ()
    source: str = ""

    @property
    def modality(self) -> str:
        """Returns the tag name of the solution, e.g. `X_RAY`."""
        return split_solution(self.solution, self.id)[0]

    @property
    def answer(self) -> str:
        """Returns the reference answer without its tag."""
        return split_solution(self.solution, self.id)[1]

    def load_images(self) -> list:
        """Returns the decoded RGB images, in order."""
        return [ref.load(self.id) for ref in self.images]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Sample:
        """Returns the Sample of a normalised row (see `validate_row`)."""
        images = tuple(ImageRef(data=im.get("bytes"), path=im.get("path")) for im in row.get("image") or ())
        return cls(
            id=str(row["id"]),
            problem=row["problem"],
            solution=row["solution"],
            images=images,
            source=row.get("source") or "",
        )


def split_solution(solution: str, sample_id: str = "?", tags: Sequence[str] = MODALITY_TAGS) -> tuple[str, str]:
    """Returns (tag name, answer) of a `<TAG> answer` solution; raises SampleError if malformed."""
    match = _TAG_RE.match(solution)
    if not match:
        raise SampleError(sample_id, "solution", f"must start with a modality tag like <X_RAY>; got {solution[:40]!r}")
    tag, answer = match.group(1), match.group(2).strip()
    if tag not in tags:
        raise SampleError(sample_id, "solution", f"unknown modality tag <{tag}>; expected one of {', '.join(tags)}")
    if not answer:
        raise SampleError(sample_id, "solution", f"has the tag <{tag}> but no answer after it")
    return tag, answer


def _normalise_image(item: Any, sample_id: str, base_dir: str | None, index: int) -> dict[str, Any]:
    field = f"image[{index}]"
    if isinstance(item, (bytes, bytearray, memoryview)):
        return {"bytes": bytes(item), "path": None}
    if isinstance(item, str):
        item = {"bytes": None, "path": item}
    if not isinstance(item, Mapping):
        raise SampleError(
            sample_id,
            field,
            f"expected image bytes, a path or a {{bytes, path}} mapping; got {type(item).__name__}",
        )
    data, path = item.get("bytes"), item.get("path")
    if data is not None:
        return {"bytes": bytes(data), "path": path}
    if not path:
        raise SampleError(sample_id, field, "image has neither bytes nor a path")
    if not base_dir:
        raise SampleError(
            sample_id, field, f"image path {path!r} has no data folder to resolve against (pass base_dir)"
        )
    try:
        path = confine(base_dir, path)
    except PathEscapeError as exc:
        raise SampleError(sample_id, field, str(exc)) from exc
    if not os.path.isfile(path):
        raise SampleError(sample_id, field, f"image file missing: {path}")
    return {"bytes": None, "path": path}


def _check_image_header(image: dict[str, Any], sample_id: str, index: int) -> None:
    """Raises SampleError if the image is not a readable picture (header and checksums, no full decode)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(image["bytes"]) if image["bytes"] is not None else image["path"]) as img:
            img.verify()
    except Exception as exc:  # PIL raises many types for damaged files
        where = image["path"] or f"{len(image['bytes'])} bytes"
        raise SampleError(sample_id, f"image[{index}]", f"image cannot be decoded ({where}): {exc}") from exc


def validate_row(
    row: Mapping[str, Any],
    *,
    prompt_key: str = "problem",
    answer_key: str = "solution",
    image_key: str = "image",
    tags: Sequence[str] = MODALITY_TAGS,
    base_dir: str | None = None,
    verify_images: bool = True,
    position: int | None = None,
) -> dict[str, Any]:
    """Returns the row in SAMPLE_SCHEMA form; raises SampleError naming the sample and field.

    `position` names rows that have no id (e.g. `row 17`); image paths resolve against `base_dir` (the
    data set's folder) and must stay inside it: an absolute path or one whose `..` leaves it is refused.
    """
    raw_id = row.get("id")
    sample_id = str(raw_id) if raw_id not in (None, "") else f"row {position if position is not None else '?'}"
    if raw_id in (None, ""):
        raise SampleError(sample_id, "id", "missing")
    for key, name, config_key in ((prompt_key, "problem", "prompt_key"), (answer_key, "solution", "answer_key")):
        if key not in row:
            raise SampleError(sample_id, key, f"missing column (the {name} column; check data.{config_key})")
        value = row[key]
        if not isinstance(value, str) or not value.strip():
            raise SampleError(sample_id, key, f"expected a non-empty string; got {value!r}")
    split_solution(row[answer_key], sample_id, tags)
    raw_images = row.get(image_key)
    if raw_images is None:
        raw_images = []
    elif isinstance(raw_images, (bytes, str, Mapping)):
        raw_images = [raw_images]
    images = [_normalise_image(im, sample_id, base_dir, i) for i, im in enumerate(raw_images)]
    if verify_images:
        for i, im in enumerate(images):
            _check_image_header(im, sample_id, i)
    source = row.get("source")
    return {
        "id": sample_id,
        "problem": row[prompt_key],
        "solution": row[answer_key],
        "image": images,
        "source": "" if source is None else str(source),
    }

"""A benchmark task's spec (one entry of the registry, medix_ray/eval/configs/tasks.yaml) and its error type.

`TaskSpec` says where a task's rows live and how a source row becomes a question; the registry that reads and
validates the specs is medix_ray/eval/tasks.py, the readers of a task's rows are medix_ray/eval/task_sources.py,
its questions medix_ray/eval/task_questions.py and its images medix_ray/eval/task_images.py.
"""

from __future__ import annotations

from dataclasses import dataclass

LETTERS = "ABCDEFGHIJ"
TEMPLATES = ("base", "mimic")  # the judge templates (docs/method.md)
GROUPS = ("llm", "vlm")
ANSWER_FORMATS = ("index", "letter", "text")
LIST_ENTRIES = ("first", "all")


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

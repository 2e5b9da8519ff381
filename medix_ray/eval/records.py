"""The records that cross the evaluation's phase boundaries: an item to answer, and its judged result.

    registry/loader ──EvalItem──▶ generate ──Generation row──▶ judge ──judged row──▶ score ──▶ report

Rows on disk and in Ray Data are plain dicts with these fields (`EvalItem.to_row()`); every row carries
the item's `id` (`<task>_<k>`, k = the row's position in the source split after filtering), which is
the key each phase resumes by.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

# How a task is judged: a 0/1 verdict (QA, MCQ, VQA; the BASE template) or a 0–5 rubric (MIMIC reports).
KINDS = ("binary", "rubric")
RUBRIC_MAX = 5.0

# A record's status. `scored` records carry the judge's score. `grader_attack` records carry 0, decided
# without the judge because the prediction is an attack on it (medix_ray/rewards/grader_attack.py): a wrong
# answer, counted in the accuracy and counted apart. Every other status is an error, excluded from the
# accuracy and counted in the report.
STATUSES = ("scored", "grader_attack", "input_error", "generation_error", "judge_error")
SCORED_STATUSES = ("scored", "grader_attack")


@dataclass(frozen=True)
class EvalItem:
    """One benchmark question, ready to be asked."""

    id: str  # "<task>_<k>"
    task: str  # registry name, e.g. "medqa"
    question: str  # the full user text: question, then "\n\nChoices:\nA. ..." for MCQ
    answer: str  # the reference answer text the judge sees (the option text for MCQ, not its letter)
    kind: str = "binary"  # binary | rubric
    template: str = "base"  # judge template: base | mimic
    group: str = "llm"  # llm (text-only task) | vlm (image task)
    modality: str = ""  # imaging modality when the source says (e.g. SLAKE "CT"); "" when unknown
    choices: tuple[str, ...] = ()  # option texts in letter order ("" for a None option, lettering kept)
    answer_letter: str = ""  # the correct option's letter for MCQ, "" otherwise
    image: bytes | None = None  # the encoded image (VLM tasks), decoded only by the generator
    image_path: str = ""  # where the image came from, for error messages
    error: str = ""  # a loading problem of this one item (e.g. image file missing); the item is recorded, not asked

    def to_row(self) -> dict[str, Any]:
        """Returns the item as a row: {field: value} for every field, its choices as a list."""
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        row["choices"] = list(self.choices)
        return row

"""A task's source row as a question: the question text, the answer, the options in letter order, the letter.

    text, answer, choices, letter = build_question(spec, row)

The columns a spec names (`mapped_columns`) must be in the row (`column_value`), else the registry's mapping is wrong
and `TaskDataError` says which column and which there are; an answer that names no option is the row's error.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

from medix_ray.eval.task_spec import LETTERS, TaskDataError, TaskSpec


def column_value(spec: TaskSpec, row: Mapping[str, Any], column: str) -> Any:
    if column not in row:
        raise TaskDataError(
            f"task {spec.name!r}: column {column!r} is not in the data; columns: {', '.join(sorted(map(str, row)))}"
        )
    return row[column]


def mapped_columns(spec: TaskSpec) -> list[str]:
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
        values = [column_value(spec, row, c) for c in spec.choices]
    else:
        value = column_value(spec, row, spec.choices)
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
    raw = column_value(spec, row, spec.answer)
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
        detail = column_value(spec, row, spec.answer_detail)
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
    value = column_value(spec, row, column)
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

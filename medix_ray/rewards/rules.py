"""Rule-based pieces of the composite reward: parsing, format, modality, and the answer guards.

Pure functions, no model calls. Each preset's behaviour is spelt out beside the reference's
(docs/method.md §1.4): the `paper` functions reproduce the reference `compute_score`
quirks included; the `medix` ones fix its flaws (§8).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from medix_ray.data.modality import MODALITY_TAGS

# --- the reference's text handling (paper preset) -------------------------------------------

# A whitespace run that ends before `<`, `>` or `/` (matched from its first character only, without
# backtracking), or one that follows them. The reference's `\s*([<>/])\s*` -> `\1` deletes the same runs,
# but in quadratic time on a long run of whitespace.
_SQUEEZE = re.compile(r"(?<!\s)\s++(?=[<>/])|(?<=[<>/])\s++")


def squeeze_whitespace(text: str) -> str:
    """Returns the text with every whitespace run next to `<`, `>` or `/` deleted, anywhere (the reference's quirk)."""
    return _SQUEEZE.sub("", text)


def split_reference(reference: str) -> tuple[str, str]:
    """Returns (modality target, answer target), both stripped (the medix preset's reading).

    The modality target is everything up to and including the first `>`, stripped; the answer is the rest,
    stripped, with leading and trailing periods removed. A reference without `>` yields an empty tag.
    The paper preset reads a reference with `paper_split_reference` instead.
    """
    head, sep, tail = reference.partition(">")
    if not sep:
        return "", reference.strip().strip(".")
    return (head + sep).strip(), tail.strip().strip(".")


def clean_answer(text: str) -> str:
    """Returns the answer stripped of whitespace and of leading/trailing periods, then of whitespace again
    (the medix preset's reading; the paper preset uses `paper_clean_answer`)."""
    return text.strip().strip(".").strip()


def paper_split_reference(reference: str) -> tuple[str, str | None]:
    """Returns (modality target, answer target) exactly as the reference's `medical.py` reads a solution.

    - modality target: `reference.split(">", 1)[0] + ">"`, NOT stripped (a solution that starts with a
      space, " <X_RAY> ...", has the target " <X_RAY>", which no stripped prefix equals), and for a
      solution without `>` the whole solution plus ">";
    - answer target: the text after the first `>`, stripped, then stripped of leading/trailing periods;
      None when there is no `>`: the reference's `split(">", maxsplit=1)[1]` raises IndexError there, which
      its accuracy functions swallow into a silent 0 (the caller reports it as `bad_reference` instead).
    """
    head, sep, tail = reference.partition(">")
    return head + ">", (tail.strip().strip(".") if sep else None)


def paper_clean_answer(text: str) -> str:
    """Returns the answer the reference's way: stripped of whitespace, then of leading/trailing periods, and
    NOT of whitespace again ("Left lung ." stays "Left lung ", which is no exact match of "Left lung")."""
    return text.strip().strip(".")


def paper_invalid_answer(answer: str) -> bool:
    """Returns True for answers the reference refuses to score: empty, one character, or containing `__`, `:` or `?`."""
    return len(answer) <= 1 or "__" in answer or ":" in answer or "?" in answer


def paper_format_reward(response: str, think_tag: str = "thinking", answer_tag: str = "answer") -> float:
    """Returns 1.0 if, from the first think tag on, the response is exactly think block + answer block.

    Text before the first think tag is ignored (that is where the modality tag goes).
    """
    start = response.find(f"<{think_tag}>")
    if start < 0:
        return 0.0
    # The reference's `re.fullmatch(<T>.*?</T>\s*<A>.*?</A>)` on response[start:], in linear time (the regex
    # is quadratic on many closing think tags): the text ends with </A>, and the first `</T>\s*<A>` after
    # the opening tag leaves room for it (a later one can only end later).
    # `.rstrip()`: the reference strips `response[start:]` (its start is `<`, so only the end can change).
    text, closing = response[start:].rstrip(), f"</{answer_tag}>"
    if not text.endswith(closing):
        return 0.0
    join = re.compile(rf"</{re.escape(think_tag)}>\s*+<{re.escape(answer_tag)}>").search(text, len(think_tag) + 2)
    return 1.0 if join is not None and join.end() <= len(text) - len(closing) else 0.0


def paper_modality_reward(response: str, tag_target: str, think_tag: str = "thinking") -> float:
    """Returns 1.0 if the text before the first think tag, stripped, equals the target tag, both upper-cased.

    As the reference: a response without the think tag scores 0 (a bare "<X_RAY>" is no modality answer);
    the target is compared as given (`paper_split_reference` does not strip it); and case is folded with
    `str.upper()`, as the reference does ("ß" upper-cases to "SS", so `<ß>` equals `<SS>`; lower() differs).
    """
    start = response.find(f"<{think_tag}>")
    if start < 0:
        return 0.0
    return 1.0 if response[:start].strip().upper() == tag_target.upper() else 0.0


# --- the hardened rules (medix preset) --------------------------------------------------------

_TAG_RE = re.compile(r"<\s*([A-Za-z_]+)\s*>")


def medix_format_reward(response: str, think_tag: str = "think", answer_tag: str = "answer") -> float:
    """Returns 1.0 for `[<TAG>] <think>…</think> <answer>…</answer>` with nothing else and one answer block.

    Unlike the reference, text other than one tag before the think block fails the format
    (the prompt says "nothing outside these tags"), and a second answer block fails it too
    (hedging by giving several answers).
    """
    pattern = (
        # Possessive whitespace (`\s*+`): the runs are never re-split, so a response of whitespace is linear
        # time, not quadratic; the characters after each run differ from whitespace, so nothing else changes.
        rf"\s*+(?:<\s*+[A-Za-z_]++\s*+>)?\s*+<{think_tag}>(?:(?!<{think_tag}>).)*?</{think_tag}>"
        rf"\s*+<{answer_tag}>((?:(?!<{answer_tag}>).)*?)</{answer_tag}>\s*+"
    )
    return 1.0 if re.fullmatch(pattern, response, re.DOTALL) else 0.0


def medix_modality_reward(response: str, tag_name: str, think_tag: str = "think", tags=MODALITY_TAGS) -> float:
    """Returns 1.0 if the first modality tag written before the think block is the target tag.

    Robust to a preamble (thinking-type backbones emit one before the tag) and to spaces or
    case inside the tag; only known tag names count, so `<b>` or `<answer>` are not read as a modality.
    """
    start = response.find(f"<{think_tag}>")
    prefix = response[:start] if start >= 0 else response
    known = {t.upper() for t in tags}
    for match in _TAG_RE.finditer(prefix):
        name = match.group(1).upper()
        if name in known:
            return 1.0 if name == tag_name.upper() else 0.0
    return 0.0


def medix_invalid_answer(answer: str) -> bool:
    """Returns True for answers with no content: empty, or only punctuation/whitespace (a letter or digit of
    any script is content: "肺炎", "是").

    The reference's rule also zeroed "3:1", "5", "B" and answers echoing a "?"; those are real
    answers here. Answers that address the grader are caught by
    `medix_ray.rewards.grader_attack.check_answer` instead.
    """
    return not any(ch.isalnum() for ch in answer)


# --- closed-form answers, compared without a judge (medix preset) -----------------------------

_YES = {"yes", "y", "true", "present", "positive"}
_NO = {"no", "n", "false", "absent", "negative"}
_OPTION_RE = re.compile(r"^\s*(?:\(?(?:option|choice)\s*)?\(?([A-Ja-j])\)?\s*[.):]?\s*$", re.IGNORECASE)
_NUMBER_RE = re.compile(r"^\s*([-+]?\d+(?:[.,]\d+)?)\s*([A-Za-z%/µ^0-9]*(?:/[A-Za-z0-9]+)?)\s*$")


@dataclass(frozen=True)
class ClosedForm:
    kind: str  # yes_no | option | number
    value: str
    unit: str = ""


def closed_form(text: str) -> ClosedForm | None:
    """Returns the closed form of a short answer (yes/no, an option letter, a number with an optional unit), or None."""
    t = clean_answer(text).lower()
    if t in _YES:
        return ClosedForm("yes_no", "yes")
    if t in _NO:
        return ClosedForm("yes_no", "no")
    m = _OPTION_RE.match(t)
    if m and (len(t) <= 3 or "option" in t or "choice" in t):
        return ClosedForm("option", m.group(1).upper())
    m = _NUMBER_RE.match(t)
    if m:
        value = m.group(1).replace(",", ".")
        return ClosedForm("number", str(float(value)), m.group(2).lower())
    return None


def closed_form_match(answer: str, reference: str) -> bool | None:
    """Returns whether a closed-form answer matches a closed-form reference; None when a judge must decide.

    Decided here: the reference is yes/no, an option letter or a number, and the answer is of the
    same kind ("Yes, ..." counts as yes). A number matches if the values are equal and the
    answer's unit is the reference's (or the answer gives none). Anything else — a free-text
    reference, or a free-text answer such as "four chambers" — goes to the judge.
    """
    ref = closed_form(reference)
    if ref is None:
        return None
    ans = closed_form(answer)
    if ans is None and ref.kind == "yes_no":
        first = re.match(r"\s*([A-Za-z]+)\b", answer)
        ans = closed_form(first.group(1)) if first else None
    if ans is None or ans.kind != ref.kind:
        return None
    if ans.value != ref.value:
        return False
    return ref.kind != "number" or not ans.unit or ans.unit == ref.unit

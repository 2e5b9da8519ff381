"""A test oracle: the MediX-R1 reference reward's rules, written here from their specification.

The rules are the reference's (github.com/mbzuai-oryx/MediX-R1, `training/examples/reward_function/
medical.py`), as docs/method.md §1.4 states them; this file is our own, deliberately plain restatement
of them, independent of `medix_ray/rewards/rules.py`, with the judge and the embedder passed in as
functions. `tests/rewards/test_paper_reference_diff.py` fuzzes the `paper` preset against it.

The rules, on the response after the whitespace squeeze (whitespace around `<`, `>`, `/` removed):
- format: from the first `<thinking>` on, stripped, the whole text is `<thinking>…</thinking>`, optional
  whitespace, `<answer>…</answer>` (non-greedy blocks, newlines allowed); no `<thinking>`: 0.
- modality: no `<thinking>`: 0; else the text before it, stripped, equals (upper-cased on both sides) the
  solution up to its first `>`, with that `>` and unstripped.
- answers: the first `<answer>` block's content, else the whole response; stripped, then periods stripped
  from both ends. The target: the solution after its first `>`, stripped, then periods stripped. A solution
  without `>` makes both accuracies fail, which the reference scores 0.
- an answer is invalid (accuracy 0) when empty, one character long, or holding `__`, `:` or `?`.
- accuracy: invalid: 0; equal to the target: 1; else the judge (a reply holding YES, upper-cased: 1) or
  the cosine of the two embeddings (>= 0.8: 1). A judge or embedder failure scores 0.
- overall = 0.9 x 0.575 llm + 0.9 x 0.375 embed + 0.9 x 0.05 modality + 0.1 format, summed in that order.
"""

import re

WEIGHTS = {"accuracy_llm": 0.575, "accuracy_embed": 0.375, "modality": 0.05}
FORMAT_WEIGHT = 0.1
THINK, ANSWER = "<thinking>", re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
WELL_FORMED = re.compile(r"<thinking>.*?</thinking>\s*<answer>.*?</answer>", re.DOTALL)


def squeeze(text: str) -> str:
    return re.sub(r"\s*([<>/])\s*", r"\1", text)


def format_reward(text: str) -> float:
    start = text.find(THINK)
    if start < 0:
        return 0.0
    return float(WELL_FORMED.fullmatch(text[start:].strip()) is not None)


def modality_reward(text: str, solution: str) -> float:
    start = text.find(THINK)
    if start < 0:
        return 0.0
    said = text[:start].strip().upper()
    wanted = (solution.partition(">")[0] + ">").upper()
    return float(said == wanted)


def _extract_answer(text: str, solution: str) -> tuple[str, str]:
    """(answer, target); raises IndexError for a solution without `>`, as the reference does."""
    found = ANSWER.search(text)
    answer = (found.group(1) if found else text).strip().strip(".")
    head, sep, tail = solution.partition(">")
    if not sep:
        raise IndexError(f"solution {solution!r} has no '>'")
    return answer, tail.strip().strip(".")


def _is_invalid_answer(answer: str) -> bool:
    return len(answer) <= 1 or any(bad in answer for bad in ("__", ":", "?"))


def _accuracy(text: str, solution: str, decide) -> float:
    try:
        answer, target = _extract_answer(text, solution)
        if _is_invalid_answer(answer):
            return 0.0
        if answer == target:
            return 1.0
        return decide(answer, target)
    except Exception:  # the reference scores any failure 0
        return 0.0


def compute_score(items: list[dict[str, str]], *, judge, cosine) -> list[dict[str, float]]:
    """items: {"response", "ground_truth"}; judge(answer, target) -> reply text; cosine(answer, target) -> float."""
    out = []
    for item in items:
        text, solution = squeeze(item["response"]), item["ground_truth"]
        scores = {
            "format": format_reward(text),
            "accuracy_llm": _accuracy(text, solution, lambda a, t: float("YES" in judge(a, t).strip().upper())),
            "accuracy_embed": _accuracy(text, solution, lambda a, t: float(cosine(a, t) >= 0.8)),
            "modality": modality_reward(text, solution),
        }
        content = 1 - FORMAT_WEIGHT
        overall = 0.0
        for key, weight in WEIGHTS.items():  # term by term, in this order: float results bit for bit
            overall += content * weight * scores[key]
        out.append({"overall": overall + FORMAT_WEIGHT * scores["format"], **scores})
    return out

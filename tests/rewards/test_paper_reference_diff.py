"""Differential fuzz test: the `paper` preset against the reference's `compute_score`.

The reference's rules are restated from their specification in `_reference_spec.py` (judge and embedder
passed in); both sides get the same generated responses and solutions (random tags, whitespace, casing,
missing or extra tags, periods, unicode) and the same deterministic judge and embedding stubs. Compared:
the format and modality rewards, the exact-match shortcut and invalid-answer rule, the exact text sent to
the judge and to the embedder, and the overall reward, bit for bit.

The one intended difference: a solution without `>` makes the reference raise IndexError inside its
accuracy functions, which it turns into a silent 0; the paper preset reports the item unscored
(`bad_reference`, overall None) and keeps the reference's format and modality values.
"""

import hashlib
import importlib.util
import itertools
import random
import re
from pathlib import Path

import numpy as np
import pytest

from medix_ray.data.output_format import OutputFormat
from medix_ray.rewards import rules
from medix_ray.rewards.composite import CompositeScorer, RewardItem, RewardSpec, composite_reward
from medix_ray.rewards.judge import JudgeVerdict, judge_prompt, parse_verdict

_spec = importlib.util.spec_from_file_location("_reference_spec", Path(__file__).with_name("_reference_spec.py"))
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

PAPER = RewardSpec.paper()
FORMAT = OutputFormat.paper()

# --- generators ------------------------------------------------------------------------------------

WS = [" ", "  ", "\n", "\t", "\r\n", "\u00a0", "\u2003", "\u3000", "\x1c", "\x85", "\u200b", ""]
MODALITIES = [
    "<X_RAY>",
    "<x_ray>",
    "<X_Ray>",
    "< X_RAY >",
    "<CT_SCAN>",
    "<OTHER>",
    "<ß>",
    "<SS>",
    "<ss>",
    "<ı>",
    "<I>",
    "<i>",
    "<\u212a>",
    "<K>",
    "<k>",
    "X_RAY",
    "<X_RAY",
    "X_RAY>",
    "<>",
    ">",
    "",
]
THINK_OPEN = ["<thinking>", "<thinking>", "<thinking>", "< thinking >", "<THINKING>", "<think>", "<thinking", ""]
THINK_CLOSE = ["</thinking>", "</thinking>", "</ thinking>", "< / thinking >", "</think>", "</THINKING>", ""]
ANSWER_OPEN = ["<answer>", "<answer>", "<answer>", "< answer>", "<Answer>", "<answer", ""]
ANSWER_CLOSE = ["</answer>", "</answer>", "</answer>", "</ answer >", "</Answer>", "answer>", ""]
ANSWERS = [
    "Left lung",
    "left lung",
    "Right lower lobe pneumonia",
    "and / or",
    "and/or",
    "Pneumonia",
    "肺炎",
    "Straße",
    "STRASSE",
    "İstanbul",
    "3:1",
    "5",
    "B",
    "a__b",
    "is it?",
    "Yes",
    "No",
    "..",
    ".",
    "",
    "Left lung .",
    ". Left lung",
    "Left  lung",
    "Left\nlung",
    "\u212aidney",
    "Kidney",
    "ok",
]
REASONING = ["r", "hmm, <b>bold</b> / maybe", "a < b > c", "<answer>x</answer>", "</thinking>", "..."]


def periods_and_space(rng: random.Random, text: str) -> str:
    """Returns the text with random periods and whitespace added around it."""
    for _ in range(rng.randint(0, 3)):
        piece = rng.choice([".", "..", rng.choice(WS), " .", ". "])
        text = piece + text if rng.random() < 0.5 else text + piece
    return text


def gen_answer(rng: random.Random) -> str:
    a = rng.choice(ANSWERS)
    if rng.random() < 0.2:
        a = a.upper() if rng.random() < 0.5 else a.lower()
    return periods_and_space(rng, a)


def gen_solution(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.08:  # no `>` at all: the reference raises IndexError
        return periods_and_space(rng, rng.choice(["No tag here", "<X_RAY Left lung", "", "Left lung"]))
    if r < 0.12:
        return rng.choice([">", "> ", ">.", "<X_RAY>", "<X_RAY>>Left lung", "a>b>c"])
    tag = rng.choice(MODALITIES[:13])
    lead = rng.choice(["", "", "", " ", "\n", "\u00a0"])
    return lead + tag + rng.choice(WS[:5]) + periods_and_space(rng, rng.choice(ANSWERS))


def gen_structured(rng: random.Random, solution: str) -> str:
    """A response built like the format, each piece randomly varied, dropped or repeated."""
    tag = solution.split(">", 1)[0] + ">" if rng.random() < 0.4 else rng.choice(MODALITIES)
    if rng.random() < 0.2:
        tag = rng.choice(["Sure. ", "Okay\n"]) + tag
    answer = gen_answer(rng)
    if ">" in solution and rng.random() < 0.35:  # the solution's own answer, so exact matches happen
        answer = periods_and_space(rng, solution.split(">", 1)[1].strip().strip("."))
    parts = [
        rng.choice(WS),
        tag,
        rng.choice(WS),
        rng.choice(THINK_OPEN),
        rng.choice(WS),
        rng.choice(REASONING),
        rng.choice(WS),
        rng.choice(THINK_CLOSE),
        rng.choice(WS),
        rng.choice(ANSWER_OPEN),
        answer,
        rng.choice(ANSWER_CLOSE),
        rng.choice(WS),
    ]
    if rng.random() < 0.15:
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(["<answer>B</answer>", "<thinking>", "</answer>"]))
    if rng.random() < 0.15:
        parts.append(rng.choice(["trailing", "<answer>again</answer>", "."]))
    if rng.random() < 0.1:
        del parts[rng.randrange(len(parts))]
    return "".join(parts)


def gen_soup(rng: random.Random) -> str:
    """A response of random tags, words, brackets, slashes and whitespace."""
    pool = MODALITIES + THINK_OPEN + THINK_CLOSE + ANSWER_OPEN + ANSWER_CLOSE + ANSWERS + WS + ["<", ">", "/", " / "]
    return "".join(rng.choice(pool) for _ in range(rng.randint(0, 14)))


def gen_case(rng: random.Random) -> tuple[str, str]:
    solution = gen_solution(rng)
    response = gen_structured(rng, solution) if rng.random() < 0.8 else gen_soup(rng)
    return response, solution


# --- deterministic stubs for the judge and the embedder, the same on both sides ----------------------

_REPLIES = ["YES", "NO", "No, yes", "yes.", "N", "Nope", None]  # None: the call fails


def _digest(*texts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(texts).encode("utf-8", "surrogatepass")).digest()[:8], "big")


def judge_reply(prompt: str) -> str | None:
    return _REPLIES[_digest("judge", prompt) % len(_REPLIES)]


def cosine_of(answer: str, reference: str) -> float:
    return [0.5, 0.79, 0.8, 0.81, 0.95, 1.0][_digest("embed", answer, reference) % 6]


class StubJudge:
    def __init__(self):
        self.prompts: list[str] = []

    async def verdicts(self, prompts):
        self.prompts.extend(prompts)
        out = []
        for p in prompts:
            reply = judge_reply(p)
            if reply is None:
                out.append(JudgeVerdict(None, "judge_error", error="stub failure"))
            else:
                out.append(JudgeVerdict(parse_verdict("paper", reply), "scored", reply))
        return out


class StubSimilarity:
    def __init__(self):
        self.pairs: list[tuple[str, str]] = []

    async def acosines(self, answers, references):
        self.pairs.extend(zip(answers, references, strict=True))
        return np.array([cosine_of(a, r) for a, r in zip(answers, references, strict=True)], dtype=np.float64)


def reference_scores(cases):
    """Runs the reference's compute_score on the cases; returns its scores and what its judge and embedder saw."""
    judged, embedded = [], []

    def judge(answer, ground_truth):
        judged.append(judge_prompt("paper", answer, ground_truth))
        reply = judge_reply(judged[-1])
        if reply is None:
            raise ConnectionError("stub failure")
        return reply

    def cosine(answer, ground_truth):
        embedded.append((answer, ground_truth))
        return cosine_of(answer, ground_truth)

    inputs = [{"response": r, "ground_truth": s} for r, s in cases]
    return ref.compute_score(inputs, judge=judge, cosine=cosine), judged, embedded


def our_scores(cases):
    judge, sim = StubJudge(), StubSimilarity()
    items = [RewardItem(str(i), "Q?", r, s) for i, (r, s) in enumerate(cases)]
    return CompositeScorer(PAPER, judge, sim).score_sync(items), judge.prompts, sim.pairs


# --- the tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_paper_preset_reproduces_the_reference_reward_vectors(seed):
    rng = random.Random(seed)
    cases = [gen_case(rng) for _ in range(500)]
    theirs, their_prompts, their_pairs = reference_scores(cases)
    ours, our_prompts, our_pairs = our_scores(cases)

    bad = [">" not in s for _, s in cases]
    assert sum(bad) > 10 and sum(not b for b in bad) > 400  # both kinds of solution are exercised
    for (response, solution), t, o, no_gt in zip(cases, theirs, ours, bad, strict=True):
        where = f"response={response!r} solution={solution!r}"
        assert (o.format, o.modality) == (t["format"], t["modality"]), where
        if no_gt:  # the reference: IndexError -> silent 0 for both accuracies; here unscored, reported
            assert (t["accuracy_llm"], t["accuracy_embed"]) == (0.0, 0.0), where
            assert (o.accuracy_llm, o.accuracy_embed, o.overall) == (None, None, None), where
            assert o.status["accuracy_llm"] == o.status["accuracy_embed"] == "bad_reference", where
            continue
        assert (o.accuracy_llm, o.accuracy_embed) == (t["accuracy_llm"], t["accuracy_embed"]), where
        assert o.overall == t["overall"], where  # bit for bit, not approx
    # The judge and the embedder are asked about the same (answer, reference) pairs, in the same order
    # (an item without `>` never reaches them on either side).
    assert our_prompts == their_prompts
    assert our_pairs == their_pairs
    statuses = {o.status["accuracy_llm"] for o in ours}
    assert {"exact_match", "invalid_answer", "scored", "judge_error", "bad_reference"} <= statuses


@pytest.mark.parametrize("seed", range(4))
def test_paper_rule_functions_match_the_reference_on_raw_text(seed):
    """The single rules, also on text that was not whitespace-squeezed first."""
    rng = random.Random(1000 + seed)
    for _ in range(1500):
        response, solution = gen_case(rng)
        squeezed = re.sub(r"\s*(<|>|/)\s*", r"\1", response)
        assert rules.squeeze_whitespace(response) == squeezed, response
        for text in (response, squeezed):
            assert rules.paper_format_reward(text) == ref.format_reward(text), text
            tag, answer_target = rules.paper_split_reference(solution)
            assert rules.paper_modality_reward(text, tag) == ref.modality_reward(text, solution), (text, solution)
            span = FORMAT.answer_span(text)
            answer = rules.paper_clean_answer(span if span is not None else text)
            assert rules.paper_invalid_answer(answer) == ref._is_invalid_answer(answer), answer
            if answer_target is None:
                with pytest.raises(IndexError):
                    ref._extract_answer(text, solution)
            else:
                assert (answer, answer_target) == ref._extract_answer(text, solution), (text, solution)


def test_combination_is_bit_identical_for_every_binary_vector():
    for fmt, llm, emb, mod in itertools.product((0.0, 1.0), repeat=4):
        cw = 1 - 0.1
        theirs = cw * 0.575 * llm + cw * 0.375 * emb + cw * 0.05 * mod + 0.1 * fmt
        assert composite_reward(fmt, llm, emb, mod) == theirs


# --- the divergences found by the audit, pinned -------------------------------------------------------


def test_no_thinking_tag_scores_no_modality():
    # The reference returns 0 when there is no <thinking>; a bare tag is no modality answer.
    assert ref.modality_reward("<X_RAY>", "<X_RAY> Left lung") == 0.0
    assert rules.paper_modality_reward("<X_RAY>", "<X_RAY>") == 0.0
    assert rules.paper_modality_reward("<X_RAY><answer>Left lung</answer>", "<X_RAY>") == 0.0


def test_whitespace_before_a_trailing_period_is_no_exact_match():
    # "Left lung ." -> strip -> strip(".") -> "Left lung " != "Left lung": the reference asks the judge.
    ours, prompts, _ = our_scores([("<X_RAY><thinking>r</thinking><answer>Left lung .</answer>", "<X_RAY> Left lung")])
    assert ours[0].answer == "Left lung " and ours[0].status["accuracy_llm"] != "exact_match"
    assert prompts == [judge_prompt("paper", "Left lung ", "Left lung")]


def test_solution_without_angle_bracket_is_unscored_not_zero():
    (bd,), prompts, pairs = our_scores([("<X_RAY><thinking>r</thinking><answer>Left lung</answer>", "Left lung")])
    assert bd.overall is None and not bd.scored
    assert bd.status["accuracy_llm"] == bd.status["accuracy_embed"] == "bad_reference"
    assert (bd.format, bd.modality) == (1.0, 0.0)  # the reference's values: its target is "Left lung>"
    assert prompts == [] and pairs == []


def test_modality_target_is_not_stripped_and_case_folds_with_upper():
    # The reference's target is `solution.split(">")[0] + ">"`, unstripped: a leading space never matches.
    assert ref.modality_reward("<X_RAY><thinking>", " <X_RAY> a") == 0.0
    assert rules.paper_modality_reward("<X_RAY><thinking>", rules.paper_split_reference(" <X_RAY> a")[0]) == 0.0
    # str.upper(), not str.lower(): "ß" upper-cases to "SS".
    assert ref.modality_reward("<ß><thinking>", "<SS> a") == 1.0
    assert rules.paper_modality_reward("<ß><thinking>", "<SS>") == 1.0


def test_format_ignores_trailing_whitespace_like_the_reference():
    text = "<thinking>r</thinking><answer>a</answer>\n"
    assert ref.format_reward(text) == rules.paper_format_reward(text) == 1.0

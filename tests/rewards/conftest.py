"""Deterministic test doubles for the judge and the embedder (the real ones are tested separately)."""

import re

import numpy as np
import pytest

from medix_ray.rewards.judge import JudgeVerdict


class FakeJudge:
    """YES iff the reference answer occurs in the predicted one (case-insensitive); records every prompt."""

    def __init__(self, fail: bool = False):
        self.prompts: list[str] = []
        self.fail = fail

    async def verdicts(self, prompts):
        self.prompts.extend(prompts)
        out = []
        for p in prompts:
            if self.fail:
                out.append(JudgeVerdict(None, "judge_error", error="down"))
                continue
            pred = re.search(r"(?:Predicted|Candidate) answer: (.*)", p).group(1)
            ref = re.search(r"(?:Ground-truth|Reference) answer: (.*)", p).group(1)
            out.append(JudgeVerdict(1.0 if ref.lower() in pred.lower() else 0.0, "scored", "YES"))
        return out


class FakeEmbedder:
    """Bag-of-words vectors over a hashed vocabulary: identical word sets give cosine 1."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z0-9]+", t.lower()):
                out[i, sum(map(ord, w)) % 64] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@pytest.fixture
def fake_judge():
    return FakeJudge()


@pytest.fixture
def failing_judge():
    return FakeJudge(fail=True)


@pytest.fixture
def fake_embedder():
    return FakeEmbedder()

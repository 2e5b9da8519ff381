"""Every shipped training config asks the policy for the format its own reward scores.

For each recipe the prompt is rendered through a real processor (the policy's own for the offline
models; for hub policies, the offline model of the same family), the tags it asks for are read back
from the rendered text, and a response that follows those words exactly, with the right answer and
modality tag, must earn format 1, modality 1 and accuracy 1 under the same config's reward.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medix_ray.config import load_config
from medix_ray.data.output_format import OutputFormat
from medix_ray.data.prompts import render_prompt
from medix_ray.data.schema import ImageRef, Sample
from medix_ray.models import MODELS, prepare_model
from medix_ray.rewards.composite import CompositeScorer, RewardItem, RewardSpec

ROOT = Path(__file__).resolve().parents[1]
TRAINING_CONFIGS = sorted((ROOT / "configs" / "paper").glob("*.yaml")) + [
    ROOT / "configs" / "tiny_cpu.yaml",
    ROOT / "configs" / "tiny_vlm_cpu.yaml",
]


class _NoJudge:
    """Fails the test if called: an exact answer must be decided without the judge."""

    async def verdicts(self, prompts):
        raise AssertionError(f"judge called for {prompts}")


class _NoSimilarity:
    async def acosines(self, answers, references):
        raise AssertionError("embedder called")


def _renderer(policy: str):
    from medix_ray.rollout.vllm_engine import load_prompt_renderer

    if policy in MODELS:
        name = policy
    else:  # a hub policy: the offline model of its family
        name = "tiny-qwen2.5-vl" if "VL" in policy else "smollm2-135m-instruct"
    return load_prompt_renderer(str(prepare_model(name)))


def _sample(cfg, make_png) -> Sample:
    if cfg.data.text_only:
        return Sample("t1", "Which nerve supplies the diaphragm?", "<OTHER> Phrenic nerve")
    return Sample("i1", "Which lung shows the opacity?", "<X_RAY> Left lung", (ImageRef(data=make_png()),))


def _response_the_prompt_asks_for(prompt: str, sample: Sample) -> str:
    think = re.search(r"reasoning between <(\w+)> and </\1>", prompt)
    answer = re.search(r"final answer between <(\w+)> and </\1>", prompt)
    assert think and answer, f"the prompt names no format:\n{prompt}"
    opens_with_tag = "Start your reply with exactly one image-modality tag" in prompt
    assert f"<{sample.modality}>" in prompt
    head = f"<{sample.modality}>" if opens_with_tag else ""
    t, a = think.group(1), answer.group(1)
    return f"{head}<{t}>The findings point to it.</{t}><{a}>{sample.answer}</{a}>"


@pytest.mark.slow
@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=lambda p: p.name)
def test_a_response_that_follows_the_prompt_earns_the_full_rule_reward(path, make_png):
    cfg = load_config(path)
    sample = _sample(cfg, make_png)
    prompt = render_prompt(sample, _renderer(cfg.model.policy), OutputFormat.from_config(cfg))
    response = _response_the_prompt_asks_for(prompt, sample)
    scorer = CompositeScorer(RewardSpec.from_config(cfg), _NoJudge(), _NoSimilarity())
    (bd,) = scorer.score_sync([RewardItem(sample.id, sample.problem, response, sample.solution)])
    assert (bd.format, bd.modality, bd.accuracy_llm, bd.accuracy_embed) == (1.0, 1.0, 1.0, 1.0), (response, bd)


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=lambda p: p.name)
def test_the_wrong_think_tag_earns_no_format_reward(path, make_png):
    """The check above can fail: the other preset's tag gives format 0."""
    cfg = load_config(path)
    sample = _sample(cfg, make_png)
    wrong = "think" if OutputFormat.from_config(cfg).think_tag == "thinking" else "thinking"
    response = f"<{sample.modality}><{wrong}>r</{wrong}><answer>{sample.answer}</answer>"
    scorer = CompositeScorer(RewardSpec.from_config(cfg), _NoJudge(), _NoSimilarity())
    (bd,) = scorer.score_sync([RewardItem(sample.id, sample.problem, response, sample.solution)])
    assert bd.format == 0.0

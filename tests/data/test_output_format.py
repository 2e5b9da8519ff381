import random
import re

import pytest

from medix_ray.config import ConfigError, load_config
from medix_ray.data.output_format import OutputFormat, OutputFormatError
from medix_ray.data.prompts import instructions


def test_paper_preset_resolves_the_reference_think_tag_for_prompt_and_reward():
    cfg = load_config(None, ["reward.preset=paper"])
    assert cfg.data.think_tag == "thinking"  # written back, so `config show` and config.yaml say it
    assert OutputFormat.from_config(cfg) == OutputFormat.paper()
    assert "between <thinking> and </thinking>" in instructions(OutputFormat.from_config(cfg))


def test_medix_preset_defaults_to_think_and_takes_any_tag():
    assert load_config(None, []).data.think_tag == "think"
    cfg = load_config(None, ["data.think_tag=reasoning", "data.answer_tag=final"])
    fmt = OutputFormat.from_config(cfg)
    assert (fmt.think_tag, fmt.answer_tag) == ("reasoning", "final")


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["reward.preset=paper", "data.think_tag=think"], "data.think_tag is 'think' but reward.preset 'paper'"),
        (["reward.preset=paper", "data.answer_tag=final"], "data.answer_tag is 'final'"),
        (["reward.preset=paper", "data.modality_first=false"], "data.modality_first is False"),
        (["data.modality_first=false"], "reward.modality_weight is 0.05"),
    ],
)
def test_a_prompt_that_disagrees_with_its_reward_is_refused_at_load(overrides, named):
    with pytest.raises(ConfigError, match="output format and the reward's disagree") as err:
        load_config(None, overrides)
    assert named in str(err.value)


def test_no_modality_tag_is_allowed_when_the_reward_does_not_score_it():
    cfg = load_config(None, ["data.modality_first=false", "reward.modality_weight=0"])
    text = instructions(OutputFormat.from_config(cfg))
    assert "modality tag" not in text and text.startswith("You are")
    assert "1. Write your medical reasoning between <think>" in text


@pytest.mark.parametrize("bad", ["", "a b", "<think>", "1x"])
def test_malformed_tag_names_are_refused(bad):
    with pytest.raises(OutputFormatError, match="is not a tag name"):
        OutputFormat(think_tag=bad)


def _reference_span(text: str) -> str | None:
    match = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
    return match.group(1) if match else None


def test_answer_span_equals_the_reference_regex_on_random_texts():
    rng = random.Random(0)
    pieces = ["<answer>", "</answer>", "<answer", "answer>", "x", "\n", " ", "</ans", "<think>", "y z"]
    fmt = OutputFormat()
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert fmt.answer_span(text) == _reference_span(text), text


def test_answer_span_is_linear_on_unclosed_tags():
    text = "<answer>" * 200_000  # 1.6 MB: the non-greedy regex is quadratic here; str.find is not
    assert OutputFormat().answer_span(text) is None
    assert OutputFormat().answer_span(text + "ok</answer>") == "<answer>" * 199_999 + "ok"


def test_final_answer_takes_the_text_after_the_last_reasoning_block():
    fmt = OutputFormat()
    assert fmt.final_answer("<think>a</think> B. Aspirin ") == "B. Aspirin"
    assert fmt.final_answer("<THINKING>x</THINKING>one</think>two") == "two"
    assert fmt.final_answer("no reasoning at all") == "no reasoning at all"
    custom = OutputFormat(think_tag="reasoning")
    assert custom.final_answer("<reasoning>r</reasoning> Phrenic nerve") == "Phrenic nerve"


def test_example_follows_the_format():
    assert (
        OutputFormat().example("Phrenic nerve", "OTHER", "r") == "<OTHER><think>r</think><answer>Phrenic nerve</answer>"
    )
    bare = OutputFormat(modality_first=False)
    assert bare.example("A") == "<think>...</think><answer>A</answer>"

"""The policy's output format: the one object that says what a response must look like.

    <CT_SCAN><think> reasoning </think><answer> final answer </answer>

It is built once from the config (`OutputFormat.from_config`) and used by every part that writes
or reads that shape: the prompt renderer (`medix_ray.data.prompts`), the reward of both presets
(`medix_ray.rewards.composite`), validation during training (the same scorer) and the
evaluation's answer extraction (`medix_ray.eval.judging`).

The `paper` reward preset reproduces the reference's `compute_score`, which scores `<thinking>`
blocks and an opening modality tag; its prompt therefore asks for `<thinking>` too. A config that
asks the policy for one format and rewards another is refused when it is loaded
(`check_consistent`), so a recipe can never train a policy that cannot earn its own reward.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from medix_ray.data.modality import MODALITY_TAGS, tag_token

# The reasoning tag each reward preset scores when `data.think_tag` is left empty.
PRESET_THINK_TAG = {"paper": "thinking", "medix": "think"}
# The reference's answer tag; the paper preset scores only this one.
PAPER_ANSWER_TAG = "answer"
# Reasoning-block spellings the evaluation also recognises in a candidate's output, whatever the
# configured tag: evaluated models come from anywhere (the reference's eval splits at `</think>`).
_COMMON_THINK_TAGS = ("think", "thinking")

_TAG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class OutputFormatError(ValueError):
    """The configured format is malformed, or the prompt's format and the reward's disagree."""


@dataclass(frozen=True)
class OutputFormat:
    """What a response must look like.

    - `think_tag`: the reasoning block's tag name (`think` → `<think>…</think>`);
    - `answer_tag`: the final answer's tag name;
    - `modalities`: the image-modality tags the policy chooses from (`data.modalities`);
    - `modality_first`: whether the response opens with one modality tag.
    """

    think_tag: str = "think"
    answer_tag: str = "answer"
    modalities: tuple[str, ...] = MODALITY_TAGS
    modality_first: bool = True

    def __post_init__(self) -> None:
        for key, value in (("think_tag", self.think_tag), ("answer_tag", self.answer_tag)):
            if not _TAG_NAME.match(value):
                raise OutputFormatError(f"data.{key} {value!r} is not a tag name (letters, digits, underscores)")
        if self.think_tag == self.answer_tag:
            raise OutputFormatError(f"data.think_tag and data.answer_tag are both {self.think_tag!r}")
        if not self.modalities:
            raise OutputFormatError("data.modalities is empty; the format needs at least one modality tag")

    @classmethod
    def paper(cls) -> OutputFormat:
        """Returns the reference implementation's format (`<thinking>`, `<answer>`, modality first)."""
        return cls(think_tag=PRESET_THINK_TAG["paper"], answer_tag=PAPER_ANSWER_TAG)

    @classmethod
    def from_config(cls, cfg: Any) -> OutputFormat:
        """Returns the format of a `MedixConfig`; raises OutputFormatError when prompt and reward disagree.

        An empty `data.think_tag` means the reward preset's tag (`<thinking>` for `paper`, `<think>` for
        `medix`).
        """
        preset = cfg.reward.preset
        fmt = cls(
            think_tag=cfg.data.think_tag or PRESET_THINK_TAG.get(preset, "think"),
            answer_tag=cfg.data.answer_tag,
            modalities=tuple(cfg.data.modalities),
            modality_first=cfg.data.modality_first,
        )
        fmt.check_consistent(preset, cfg.reward.modality_weight)
        return fmt

    def check_consistent(self, preset: str, modality_weight: float) -> None:
        """Raises OutputFormatError if the reward `preset` scores a format other than this one."""
        if preset == "paper":
            expected = OutputFormat.paper()
            wrong = [
                f"data.{key} is {getattr(self, key)!r} but reward.preset 'paper' scores {getattr(expected, key)!r}"
                for key in ("think_tag", "answer_tag", "modality_first")
                if getattr(self, key) != getattr(expected, key)
            ]
            if wrong:
                raise OutputFormatError(
                    "the prompt's output format and the reward's disagree: "
                    + "; ".join(wrong)
                    + " (the paper preset reproduces the reference's <thinking>/<answer> scoring; "
                    "leave data.think_tag empty, or use reward.preset=medix for other tags)"
                )
        if not self.modality_first and modality_weight > 0:
            raise OutputFormatError(
                "the prompt's output format and the reward's disagree: data.modality_first is false (the "
                f"prompt asks for no modality tag) but reward.modality_weight is {modality_weight}; set it to 0"
            )

    # -- writing ---------------------------------------------------------------------------
    def tag(self, name: str) -> str:
        return f"<{name}>"

    def close(self, name: str) -> str:
        return f"</{name}>"

    def modality_list(self) -> str:
        """Returns the modality tags as the prompt lists them: `<X_RAY>, <MICROSCOPY>, …`."""
        return ", ".join(tag_token(t) for t in self.modalities)

    def example(self, answer: str, modality: str = "OTHER", reasoning: str = "...") -> str:
        """Returns a response that follows the format exactly (used in tests and docs)."""
        head = tag_token(modality) if self.modality_first else ""
        t, a = self.think_tag, self.answer_tag
        return f"{head}<{t}>{reasoning}</{t}><{a}>{answer}</{a}>"

    # -- reading ---------------------------------------------------------------------------
    def answer_span(self, response: str) -> str | None:
        """Returns the text inside the first `<answer>…</answer>` (across lines), or None.

        The same span as the reference's non-greedy `<answer>(.*?)</answer>` search, found with two
        `str.find` calls: linear time on any input (the regex is quadratic on a response full of
        unclosed tags).
        """
        opening, closing = self.tag(self.answer_tag), self.close(self.answer_tag)
        start = response.find(opening)
        if start < 0:
            return None
        start += len(opening)
        end = response.find(closing, start)
        return response[start:end] if end >= 0 else None

    def final_answer(self, prediction: str) -> str:
        """Returns a candidate's final answer for the evaluation judge: the text after the last closing
        reasoning tag (the configured one, `</think>` or `</thinking>`, any case), stripped; the whole
        text when there is none."""
        names = sorted({self.think_tag, *_COMMON_THINK_TAGS}, key=len, reverse=True)
        closing = re.compile("|".join(f"</{re.escape(n)}>" for n in names), re.IGNORECASE)
        return closing.split(prediction)[-1].strip()

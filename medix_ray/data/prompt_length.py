"""Overlong-prompt filtering (`data.max_prompt_length`), as the reference's `filter_overlong_prompts`.

A prompt's length is the number of tokens the policy sees: the prompt rendered through its chat
template, with each image expanded to its image tokens by the policy's processor after the image
was fitted into the run's pixel budget (`medix_ray.data.images`). Samples longer than the limit are
left out of the stream and counted in the read report under `prompt_too_long`, never silently.

    check = PromptLengthCheck.from_config(cfg)
    check.length(sample)  # 183
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medix_ray.data.images import PixelBounds, load_fitted
from medix_ray.data.output_format import OutputFormat
from medix_ray.data.prompts import is_multimodal, load_prompt_renderer, render_prompt

# Renderers loaded in this process, by (model path, trust_remote_code): a Ray Data worker loads each once.
_RENDERERS: dict[tuple[str, bool], Any] = {}


@dataclass(frozen=True)
class PromptLengthCheck:
    """Measures prompts the way the rollout renders them; `exceeds` says whether one is over the limit."""

    model_path: str
    max_prompt_length: int
    fmt: OutputFormat = OutputFormat()
    bounds: PixelBounds = PixelBounds()
    trust_remote_code: bool = False

    @classmethod
    def from_config(cls, cfg: Any) -> PromptLengthCheck:
        from medix_ray.models import resolve_model

        check = cls(
            model_path=resolve_model(cfg.model.policy),
            max_prompt_length=cfg.data.max_prompt_length,
            fmt=OutputFormat.from_config(cfg),
            bounds=PixelBounds.from_config(cfg.data),
            trust_remote_code=cfg.model.trust_remote_code,
        )
        try:  # here, on the driver, so that a missing tokenizer is one clear error, not one per data worker
            check._renderer()
        except Exception as exc:
            from medix_ray.config import ConfigError

            raise ConfigError(
                f"data.max_prompt_length: cannot load the tokenizer/processor of model.policy "
                f"{cfg.model.policy!r} to measure prompts: {exc}"
            ) from exc
        return check

    def _renderer(self) -> Any:
        key = (self.model_path, self.trust_remote_code)
        if key not in _RENDERERS:
            _RENDERERS[key] = load_prompt_renderer(self.model_path, self.trust_remote_code)
        return _RENDERERS[key]

    def length(self, sample: Any) -> int:
        """Returns the number of prompt tokens of a `Sample`, image tokens included."""
        renderer = self._renderer()
        text = render_prompt(sample, renderer, self.fmt)
        if is_multimodal(renderer):
            if sample.images:
                enc = renderer(text=[text], images=load_fitted(sample, self.bounds), return_tensors="np")
                return int(enc["input_ids"].shape[1])
            renderer = renderer.tokenizer
        return len(renderer(text, add_special_tokens=False)["input_ids"])

    def exceeds(self, sample: Any) -> bool:
        return self.length(sample) > self.max_prompt_length

"""The generate phase's worker: a candidate model answering benchmark items with an in-process vLLM engine.

`CandidateGenerator` is a Ray Data class UDF (one engine per actor, kept across batches). A batch
of items goes to `LLM.generate` at once, so vLLM's continuous batching runs them together; the
reference sent one HTTP request per item from a process pool. Decoding is the reference's: greedy
(temperature 0, top_p 1), at most `max_tokens` new tokens, no training prompt, an optional system
prompt, and an optional " <think>" appended to the question (its FORCE_THINK).

A request's `max_tokens` is clipped so that prompt plus answer fit the engine's context. An item
that still fails (an image that cannot be decoded, a prompt longer than the context) is returned with
status `generation_error` and the reason; the rest of its batch is answered.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import time
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)


def candidate_messages(
    question: str, *, has_image: bool, multimodal: bool, system_prompt: str = "", force_think: bool = False
) -> list[dict[str, Any]]:
    """Returns the chat sent to the candidate for one item: [system], user(image?, question)."""
    text = question.strip() + (" <think>" if force_think else "")
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    if multimodal:
        parts: list[dict[str, Any]] = [{"type": "image"}] if has_image else []
        parts.append({"type": "text", "text": text})
        messages.append({"role": "user", "content": parts})
    else:
        messages.append({"role": "user", "content": text})
    return messages


def _decode_image(data: bytes, item_id: str, source: str):
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:
        raise ValueError(
            f"item '{item_id}': image cannot be decoded ({source or f'{len(data)} bytes'}): {exc}"
        ) from exc
    return image.convert("RGB") if image.mode != "RGB" else image


class CandidateGenerator:
    """Answers batches of items; a Ray Data `map_batches` class UDF (batch_format="pandas")."""

    def __init__(
        self,
        model_path: str,
        *,
        max_tokens: int = 2048,
        max_model_len: int = 4096,
        system_prompt: str = "",
        force_think: bool = False,
        rollout_cfg: Any = None,
        pixel_bounds: Any = None,
        dtype: str = "auto",
    ):
        from medix_ray.config import ModelConfig, RolloutConfig
        from medix_ray.data.images import PixelBounds
        from medix_ray.data.prompts import is_multimodal
        from medix_ray.rollout.vllm_engine import SingleProcessLLM, engine_kwargs, load_prompt_renderer, set_cpu_env

        cfg = dataclasses.replace(rollout_cfg or RolloutConfig(), max_model_len=max_model_len)
        set_cpu_env()

        self.max_tokens = max_tokens
        self.max_model_len = max_model_len
        self.system_prompt = system_prompt
        self.force_think = force_think
        self.pixel_bounds = pixel_bounds or PixelBounds()  # the training run's image budget (data.*_pixels)
        self.renderer = load_prompt_renderer(model_path)
        self.tokenizer = getattr(self.renderer, "tokenizer", self.renderer)
        self.multimodal = is_multimodal(self.renderer)
        start = time.monotonic()
        self.llm = SingleProcessLLM(engine_kwargs(model_path, cfg, self.multimodal, ModelConfig(dtype=dtype)))
        logger.info("candidate engine for %s up in %.1f s", model_path, time.monotonic() - start)

    def _request(self, row: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
        from vllm import SamplingParams

        image = row.get("image")
        has_image = image is not None and len(image) > 0
        if has_image and not self.multimodal:
            raise ValueError(f"item '{row['id']}' has an image but the candidate model is text-only")
        messages = candidate_messages(
            row["question"],
            has_image=has_image,
            multimodal=self.multimodal,
            system_prompt=self.system_prompt,
            force_think=self.force_think,
        )
        text = self.renderer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt: dict[str, Any] = {"prompt": text}
        if has_image:
            from medix_ray.data.images import fit_pixels

            decoded = _decode_image(image, row["id"], row.get("image_path") or "")
            prompt["multi_modal_data"] = {"image": fit_pixels(decoded, self.pixel_bounds)}
        room = self.max_model_len - len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if room < 1:
            raise ValueError(
                f"item '{row['id']}': prompt does not fit the engine context of {self.max_model_len} tokens"
            )
        params = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=min(self.max_tokens, room))
        return prompt, params

    def _answer(self, requests: list[tuple[dict, Any]]) -> list[tuple[str, str, int]]:
        outputs = self.llm.generate([r[0] for r in requests], [r[1] for r in requests], use_tqdm=False)
        return [(o.outputs[0].text, str(o.outputs[0].finish_reason), len(o.outputs[0].token_ids)) for o in outputs]

    def __call__(self, batch):
        """Returns the batch with prediction, finish_reason, n_tokens, status, error, minus the image bytes."""
        rows = batch.to_dict("records")
        results: dict[int, tuple[str, str, int] | str] = {}
        ready: list[tuple[int, tuple[dict, Any]]] = []
        for i, row in enumerate(rows):
            try:
                ready.append((i, self._request(row)))
            except Exception as exc:
                results[i] = str(exc)
        try:
            for (i, _), out in zip(ready, self._answer([r for _, r in ready]), strict=True):
                results[i] = out
        except Exception as exc:  # one bad request fails vLLM's whole batch: find it by asking one at a time
            logger.warning("candidate batch failed (%s); retrying its %d items one by one", exc, len(ready))
            for i, request in ready:
                try:
                    results[i] = self._answer([request])[0]
                except Exception as one_exc:
                    results[i] = f"item '{rows[i]['id']}': generation failed: {one_exc}"[:500]
        out = []
        for i, row in enumerate(rows):
            result = results[i]
            record = {k: v for k, v in row.items() if k not in ("image",)}
            if isinstance(result, str):
                record.update(prediction="", finish_reason="", n_tokens=0, status="generation_error", error=result)
            else:
                text, finish, n_tokens = result
                record.update(prediction=text, finish_reason=finish, n_tokens=n_tokens, status="generated", error="")
            out.append(record)
        import pandas as pd

        return pd.DataFrame(out)

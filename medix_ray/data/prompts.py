"""The policy's prompt: the one place that words it.

Same inputs, instructions and decision rule as the reference's `medical_format.jinja`
(docs/method.md §1.3), in our own words: one user turn, no system prompt; the model must
open with exactly one modality tag, reason inside the think tags, answer inside the answer tags,
and write nothing else. The tags come from the run's `OutputFormat` (medix_ray/data/output_format.py).
The image sits between "Question:" and the question text. The prompt is then rendered through the
policy's own chat template (tokenizer or processor) with `add_generation_prompt=True`.

The expected completion: `<CT_SCAN><think> ... </think><answer> ... </answer>`.
"""

from __future__ import annotations

from typing import Any

from medix_ray.data.output_format import OutputFormat
from medix_ray.data.schema import Sample, SampleError


def instructions(fmt: OutputFormat = OutputFormat()) -> str:
    """Returns the instruction block that precedes "Question:", asking for `fmt`."""
    think, answer = fmt.think_tag, fmt.answer_tag
    steps = []
    if fmt.modality_first:
        steps.append(
            "Start your reply with exactly one image-modality tag chosen from this list, "
            f"and nothing before it: {fmt.modality_list()}"
        )
    steps.append(f"{'Then write' if steps else 'Write'} your medical reasoning between <{think}> and </{think}>.")
    steps.append(f"Then write your final answer between <{answer}> and </{answer}>.")
    steps.append("Write nothing outside these tags.")
    numbered = "".join(f"{i}. {step}\n" for i, step in enumerate(steps, 1))
    return (
        "You are a medical AI assistant who reasons carefully before answering.\n"
        f"Follow these steps exactly:\n{numbered}\n"
        "Question:"
    )


def chat_messages(sample: Sample, fmt: OutputFormat = OutputFormat(), multimodal: bool = True) -> list[dict[str, Any]]:
    """Returns the one-turn chat for a sample, in Hugging Face message form.

    `multimodal=True` gives content parts with one `{"type": "image"}` per image placed after
    "Question:" (for Qwen-VL processors); `False` gives a plain string and rejects samples with
    images, because a text-only policy would silently ignore them.
    """
    question = sample.problem.strip()
    if not multimodal:
        if sample.images:
            raise SampleError(
                sample.id,
                "image",
                f"has {len(sample.images)} image(s) but the policy is text-only; "
                "use a vision-language policy or data.text_only=true",
            )
        return [{"role": "user", "content": f"{instructions(fmt)} {question}"}]
    parts: list[dict[str, Any]] = [{"type": "text", "text": instructions(fmt) + " "}]
    parts.extend({"type": "image"} for _ in sample.images)
    parts.append({"type": "text", "text": question})
    return [{"role": "user", "content": parts}]


def load_prompt_renderer(model_path: str, trust_remote_code: bool = False) -> Any:
    """Returns the model's processor (vision-language models) or tokenizer, whose chat template renders prompts."""
    from transformers import AutoConfig, AutoProcessor, AutoTokenizer

    config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    if getattr(config, "vision_config", None) is not None:
        return AutoProcessor.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    return AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)


def is_multimodal(tokenizer_or_processor: Any) -> bool:
    """Returns whether the object is a processor that takes images (has an image processor)."""
    return getattr(tokenizer_or_processor, "image_processor", None) is not None


def render_prompt(sample: Sample, tokenizer_or_processor: Any, fmt: OutputFormat = OutputFormat()) -> str:
    """Returns the prompt text, rendered by the policy's chat template with the generation prompt."""
    messages = chat_messages(sample, fmt, multimodal=is_multimodal(tokenizer_or_processor))
    return tokenizer_or_processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

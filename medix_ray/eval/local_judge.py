"""A judge model inside this process: batched chat generation with an in-process vLLM engine.

    transport = InProcessTransport.start("smollm2-135m-instruct", max_model_len=4096)
    replies = asyncio.run(transport.send([ChatRequest(messages=(...,), temperature=0.0, max_tokens=64)]))

When the evaluation's judge is a local model (not a URL), the judge actor holds the engine itself, as
the generate phase's `CandidateGenerator` does, and the protocol (`medix_ray.eval.protocol`) hands it a
whole round of a batch at once: one `LLM.chat` call, which vLLM's continuous batching runs together, with
prefix caching so that the shared template and each conversation's earlier rounds are computed once.
Over HTTP the same round is one request per item.

The request is the one the OpenAI server builds from our HTTP body (`OpenAIJudge.chat`): the model's chat
template with a generation prompt and `enable_thinking=False`; the model's generation-config defaults
(as the server applies them), then temperature, top_p 1, max_tokens and the structured-outputs schema.
A request vLLM rejects (a conversation longer than the context, say) fails alone: the batch is then
sent one by one and that request returns its exception.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

from medix_ray.rewards.judge_chat import ChatRequest

logger = logging.getLogger(__name__)

CHAT_TEMPLATE_KWARGS = {"enable_thinking": False}  # as OpenAIJudge.chat sends in its body


class InProcessTransport:
    """A `ChatTransport` over an in-process vLLM `LLM` (`send` runs the whole list as one batch)."""

    def __init__(self, llm: Any):
        self.llm = llm
        # The model's generation-config defaults, which the OpenAI server applies to every request.
        self._defaults = dict(llm.model_config.get_diff_sampling_param() or {})

    @classmethod
    def start(
        cls,
        model: str,
        *,
        max_model_len: int = 4096,
        rollout_cfg: Any = None,
        prefix_caching: bool = True,
        dtype: str = "auto",
    ) -> InProcessTransport:
        """Returns a transport over a new engine for `model` (an offline model name or a path)."""
        from medix_ray.config import ModelConfig, RolloutConfig
        from medix_ray.models import resolve_model
        from medix_ray.rollout.vllm_engine import SingleProcessLLM, engine_kwargs, set_cpu_env

        cfg = dataclasses.replace(rollout_cfg or RolloutConfig(), max_model_len=max_model_len)
        set_cpu_env()

        path = resolve_model(model)
        kwargs = engine_kwargs(path, cfg, multimodal=False, model_cfg=ModelConfig(dtype=dtype))
        if prefix_caching:
            kwargs.update(enable_prefix_caching=True, block_size=32)  # the CPU backend needs a multiple of 32
        begin = time.monotonic()
        llm = SingleProcessLLM(kwargs)
        logger.info("in-process judge engine for %s up in %.1f s", model, time.monotonic() - begin)
        return cls(llm)

    def params(self, request: ChatRequest) -> Any:
        """Returns the vLLM SamplingParams of one request (the server's defaults, then the request's fields)."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(**dict(request.structured)) if request.structured else None
        fields = dict(self._defaults, temperature=request.temperature, top_p=1.0, max_tokens=request.max_tokens)
        return SamplingParams.from_optional(**fields, structured_outputs=structured)

    def _chat(self, requests: Sequence[ChatRequest]) -> list[str]:
        outputs = self.llm.chat(
            [[dict(m) for m in r.messages] for r in requests],
            [self.params(r) for r in requests],
            use_tqdm=False,
            chat_template_kwargs=CHAT_TEMPLATE_KWARGS,
        )
        return [o.outputs[0].text for o in outputs]

    async def send(self, requests: Sequence[ChatRequest]) -> list[str | BaseException]:
        if not requests:
            return []
        try:
            return list(self._chat(requests))
        except Exception as exc:  # one bad request fails vLLM's whole batch: find it by sending one at a time
            logger.warning("judge batch failed (%s); sending its %d requests one by one", exc, len(requests))
        out: list[str | BaseException] = []
        for request in requests:
            try:
                out.append(self._chat([request])[0])
            except Exception as exc:
                out.append(exc)
        return out

    async def pause(self, attempt: int) -> None:
        """No wait: an in-process engine has no rate limit or network to back off from."""

    def retryable(self, exc: BaseException) -> bool:
        """No: the engine rejects a request for what it is (too long, say), which a second try keeps."""
        return False

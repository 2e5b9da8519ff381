"""The judge deployment's chat: what training's reward application and the evaluation exchange over it.

The reward application's `judge` deployment (deployments/reward_app.py) answers two handle calls besides its
verdicts: `chat(messages, max_tokens=, temperature=, structured=)`, one OpenAI-style chat, one attempt, and
`info()`. The evaluation sends its judge conversations there with `eval.judge=serve:<app>`
(medix_ray/eval/serve_judge.py), so training and evaluation use one judge. This module holds the records of
that exchange, below both sides so that neither imports the other:

- `ChatRequest`: one conversation to send and how to sample its reply (the reply is its text);
- `JudgeChatError`: a chat the deployment could not answer, redacted, saying whether to send it again;
- `ServeJudgeInfo`: what the deployment says about itself, never its URL or key;
- `JUDGE_DEPLOYMENT`: the deployment's name in the application.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

JUDGE_DEPLOYMENT = "judge"  # the reward application's judge deployment (deployments/reward_app.py)


@dataclass(frozen=True)
class ChatRequest:
    """One chat to send to the judge: the conversation so far and how to sample the reply."""

    messages: tuple[Mapping[str, str], ...]  # OpenAI-style {"role", "content"} turns
    temperature: float
    max_tokens: int
    structured: Mapping[str, Any] | None = None  # vLLM structured outputs, e.g. {"json": schema}


@dataclass(frozen=True)
class ServeJudgeInfo:
    """What a judge deployment says about itself (`JudgeDeployment.info`): never its URL or key."""

    model: str  # the model name the judge answers as
    in_cluster: bool  # its own vLLM server in the replica (False: a pass-through to reward.judge.base_url)
    chats: int  # chats this replica has answered through `chat`


class JudgeChatError(RuntimeError):
    """A chat the judge deployment could not answer: the redacted reason and whether sending it again may pass
    (timeouts, dropped connections, 408/409/429, 5xx: `medix_ray.rewards.judge.retryable`)."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message, retryable)  # both in args: it pickles across the Serve boundary as it is

    @property
    def retryable(self) -> bool:
        return bool(self.args[1])

    def __str__(self) -> str:
        return str(self.args[0])

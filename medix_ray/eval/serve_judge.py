"""The reward application's judge as the evaluation's judge: one judge for training and evaluation.

    medix-ray serve-rewards --config configs/serve/rewards_cpu.yaml            # Serve app "medix-rewards"
    medix-ray evaluate --model smollm2-135m-instruct --tasks medqa,pubmedqa --limit 1 \\
        --judge serve:medix-rewards --address auto eval.judge_structured=true

`eval.judge=serve:<app>` names a running Serve application that has a `judge` deployment (the reward
application of `deployments/reward_app.py`). The evaluation's judge protocol (`medix_ray.eval.protocol`)
then sends its conversations to that deployment's `chat` method through a DeploymentHandle
(`ServeTransport`), no more than `eval.judge_concurrency` at a time. They are ongoing requests at the
judge replicas like training's, so the deployment's autoscaling (`serve.judge_*_replicas`,
`serve.target_ongoing_requests`) follows the evaluation's load too. Whatever the judge deployment is,
its own vLLM server in the replica or a pass-through to `reward.judge.base_url`, the evaluation uses
that one judge; nothing is started on the evaluation's side.

`check` (run once before judging) names the application in every error: no Serve on the cluster, no
such application, an application without a `judge` deployment, or a judge that does not answer. The
report records `serve:<app>`, the judge's model and where it runs (`label`), never a URL.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from typing import Any

from medix_ray.rewards.judge import JudgeUnavailableError
from medix_ray.rewards.judge_chat import JUDGE_DEPLOYMENT, ChatRequest, JudgeChatError, ServeJudgeInfo

logger = logging.getLogger(__name__)

SERVE_PREFIX = "serve:"
USABLE_STATUSES = ("RUNNING", "DEPLOYING", "UPSCALING", "DOWNSCALING")  # Serve application states that answer


def is_serve_judge(judge: str) -> bool:
    """Returns whether eval.judge names a Serve application's judge (`serve:<app>`)."""
    return judge.startswith(SERVE_PREFIX)


def app_name(judge: str) -> str:
    """Returns the application name of `serve:<app>`; raises ValueError for an empty one.

    >>> app_name("serve:medix-rewards")
    'medix-rewards'
    """
    name = judge[len(SERVE_PREFIX) :].strip() if is_serve_judge(judge) else ""
    if not name:
        raise ValueError(f"eval.judge={judge!r}: expected serve:<application name>, e.g. serve:medix-rewards")
    return name


def label(judge: str, info: ServeJudgeInfo | None) -> str:
    """Returns how a report names the judge: `serve:<app>` with its model and where it runs, when known.

    >>> label("serve:medix-rewards", ServeJudgeInfo("smollm2-135m-instruct", True, 0))
    'serve:medix-rewards (smollm2-135m-instruct, in-cluster vLLM)'
    """
    if info is None:
        return f"{SERVE_PREFIX}{app_name(judge)}"
    where = "in-cluster vLLM" if info.in_cluster else "pass-through to reward.judge.base_url"
    return f"{SERVE_PREFIX}{app_name(judge)} ({info.model}, {where})"


def report_label(judge: str) -> str:
    """Returns `label` with the judge deployment's info when this process is connected to Ray and the judge
    answers; `serve:<app>` alone otherwise (a report rebuilt without the cluster), with a warning."""
    import ray

    info = None
    if ray.is_initialized():
        try:
            info = judge_handle(judge).info.remote().result(timeout_s=30)
        except Exception as exc:
            logger.warning("the report names %s without its model: %s: %s", judge, type(exc).__name__, exc)
    return label(judge, info if isinstance(info, ServeJudgeInfo) else None)


def judge_handle(judge: str) -> Any:
    """Returns a DeploymentHandle to the judge deployment of `serve:<app>` on the connected Ray cluster.

    Raises JudgeUnavailableError naming the application when Serve is not running there, the application
    is missing or failed, or it has no `judge` deployment.
    """
    from ray import serve

    app = app_name(judge)
    try:
        applications = serve.status().applications
    except Exception as exc:
        raise JudgeUnavailableError(
            f"eval.judge={judge}: no Ray Serve instance answers on this cluster ({type(exc).__name__}: {exc}); "
            "start the reward application first (medix-ray serve-rewards) and pass its cluster with --address"
        ) from exc
    if app not in applications:
        running = ", ".join(sorted(applications)) or "none"
        raise JudgeUnavailableError(
            f"eval.judge={judge}: no Serve application named {app!r} on this cluster (applications: {running}); "
            "start the reward application there (medix-ray serve-rewards) or pass its cluster with --address"
        )
    status = applications[app]
    state = str(getattr(status.status, "value", status.status))
    if state not in USABLE_STATUSES:
        raise JudgeUnavailableError(f"eval.judge={judge}: Serve application {app!r} is {state}: {status.message}")
    if JUDGE_DEPLOYMENT not in status.deployments:
        raise JudgeUnavailableError(
            f"eval.judge={judge}: Serve application {app!r} has no {JUDGE_DEPLOYMENT!r} deployment "
            f"(deployments: {', '.join(sorted(status.deployments)) or 'none'}); name the reward application"
        )
    return serve.get_deployment_handle(JUDGE_DEPLOYMENT, app_name=app)


def check(judge: str, timeout_s: float = 120.0) -> ServeJudgeInfo:
    """Returns the judge deployment's info once it has answered one chat; raises JudgeUnavailableError
    naming the application otherwise (run before judging, as a URL judge's start-up check)."""
    handle = judge_handle(judge)
    try:
        info = handle.info.remote().result(timeout_s=timeout_s)
        handle.chat.remote([{"role": "user", "content": "Reply with the word YES."}], max_tokens=4).result(
            timeout_s=timeout_s
        )
    except Exception as exc:
        from medix_ray.redact import redact_text

        raise JudgeUnavailableError(
            f"eval.judge={judge}: the judge of Serve application {app_name(judge)!r} did not answer: "
            f"{type(exc).__name__}: {redact_text(str(exc))[:300]}"
        ) from exc
    if not isinstance(info, ServeJudgeInfo):
        raise JudgeUnavailableError(
            f"eval.judge={judge}: the {JUDGE_DEPLOYMENT!r} deployment of {app_name(judge)!r} is not a medix-ray "
            f"judge (its info() returned {type(info).__name__})"
        )
    return info


class ServeTransport:
    """A `ChatTransport` over a judge deployment's handle: each request is one `chat` call, at most
    `concurrency` in flight, each bounded by `timeout_s`."""

    def __init__(self, handle: Any, *, concurrency: int = 32, timeout_s: float = 180.0, backoff_s: float = 0.5):
        if concurrency < 1:
            raise ValueError(f"judge concurrency must be at least 1, got {concurrency}")
        self.handle = handle
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s

    @classmethod
    def connect(cls, judge: str, cfg: Any) -> ServeTransport:
        """Returns a transport to `serve:<app>`'s judge, bounded by the EvalConfig's judge_concurrency and
        judge_timeout_s."""
        return cls(judge_handle(judge), concurrency=cfg.judge_concurrency, timeout_s=cfg.judge_timeout_s)

    async def send(self, requests: Sequence[ChatRequest]) -> list[str | BaseException]:
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(request: ChatRequest) -> str:
            async with semaphore:
                response = self.handle.chat.remote(
                    [dict(m) for m in request.messages],
                    max_tokens=request.max_tokens,
                    temperature=request.temperature,
                    structured=dict(request.structured) if request.structured else None,
                )
                try:
                    return await asyncio.wait_for(_awaited(response), self.timeout_s)
                except TimeoutError:
                    response.cancel()
                    raise TimeoutError(f"the judge deployment did not answer within {self.timeout_s:g} s") from None

        return list(await asyncio.gather(*(one(r) for r in requests), return_exceptions=True))

    async def pause(self, attempt: int) -> None:
        await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random()))

    def retryable(self, exc: BaseException) -> bool:
        """A replica that died or is restarting, a full queue, a timeout, or a judge error the deployment
        calls retryable (`JudgeChatError.retryable`): yes. Anything else (a bad request): no."""
        from ray.exceptions import RayActorError, RayTaskError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

        if isinstance(exc, RayTaskError) and exc.cause is not None:
            exc = exc.cause
        if isinstance(exc, JudgeChatError):
            return exc.retryable
        unavailable = (RayActorError, BackPressureError, DeploymentUnavailableError, TimeoutError, ConnectionError)
        return isinstance(exc, unavailable)


async def _awaited(response: Any) -> Any:
    return await response

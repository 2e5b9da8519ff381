"""The composite reward as a Ray Serve application.

    RewardIngress (FastAPI: POST /v1/rewards, GET /healthz, /docs)
      ├── JudgeDeployment      a vLLM judge server inside the replica, or a pass-through to a URL;
      │                        also the evaluation's judge (`chat`, `eval.judge=serve:<app>`)
      └── EmbedderDeployment   sentence-transformers, requests merged with @serve.batch
    rule scorers (format, modality, guards) run in the ingress: they are microseconds of Python
    (a batch of long responses is scored in a worker thread, off the ingress event loop).

The doors (medix_ray/rewards/service_doors.py): a bearer token compared in constant time; no start on a
non-loopback host without one unless `serve.allow_unauthenticated`; bodies over `serve.max_body_bytes`
get 413 before they are parsed; a 422 names the field and the problem, its input shortened.

Start it with `medix-ray serve-rewards --config configs/serve/rewards_cpu.yaml`, with
`serve run deployments.reward_app:build_app config=configs/serve/rewards_cpu.yaml`, or with
`ray job submit --working-dir . -- python jobs/serve_rewards.py --config ...`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from ray import serve
from ray.serve.handle import DeploymentHandle

from medix_ray.config import MedixConfig, load_config
from medix_ray.redact import redact_text
from medix_ray.rewards.composite import CompositeScorer, RewardBreakdown, RewardItem, RewardSpec
from medix_ray.rewards.embedding import EmbeddingSimilarity, SentenceTransformerEmbedder
from medix_ray.rewards.judge import JudgeVerdict, OpenAIJudge, retryable
from medix_ray.rewards.judge_chat import JUDGE_DEPLOYMENT, JudgeChatError, ServeJudgeInfo
from medix_ray.rewards.service_doors import BodyLimit, check_auth_policy, token_matches, validation_error_body

logger = logging.getLogger(__name__)

MAX_ITEMS_PER_REQUEST = 4096
MAX_FIELD_CHARS = 32_768


class JudgeDeployment:
    """Gives verdicts for judge prompts: through its own vLLM server (in-cluster) or an external URL."""

    def __init__(self, cfg: MedixConfig):
        from medix_ray.rewards.judge_server import LocalJudgeServer

        self.server = None
        base_url = cfg.reward.judge.base_url
        if not base_url:
            self.server = LocalJudgeServer(
                cfg.reward.judge.model,
                profile=cfg.serve.judge_profile,
                kv_cache_space_gib=cfg.rollout.kv_cache_space_gib,
            )
            base_url = self.server.start()
        self.judge = OpenAIJudge.from_config(cfg.reward.judge, cfg.reward.preset, base_url=base_url)
        self._chat_slots = asyncio.Semaphore(cfg.reward.judge.concurrency)  # chats beside the verdicts' own bound
        self._chats = 0

    async def verdicts(self, prompts: list[str]) -> list[JudgeVerdict]:
        return await self.judge.verdicts(prompts)

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        structured: dict | None = None,
    ) -> str:
        """Handle API of the one judge (the evaluation's `medix_ray.eval.serve_judge.ServeTransport`): the reply
        of this judge to an OpenAI-style chat, one attempt; a failure raises `JudgeChatError`, redacted, saying
        whether sending it again may pass. A pass-through judge forwards to `reward.judge.base_url`."""
        async with self._chat_slots:
            try:
                reply = await self.judge.chat(
                    list(messages), max_tokens=max_tokens, temperature=temperature, structured=structured
                )
            except Exception as exc:  # the client's exceptions may not pickle: send the reason and the verdict
                raise JudgeChatError(redact_text(f"{type(exc).__name__}: {exc}")[:300], retryable(exc)) from None
        self._chats += 1
        return reply

    def info(self) -> ServeJudgeInfo:
        """Handle API: the judge's model, whether it runs in this replica, and the chats answered (a
        `medix_ray.rewards.judge_chat.ServeJudgeInfo`; never the URL)."""
        return ServeJudgeInfo(model=self.judge.model, in_cluster=self.server is not None, chats=self._chats)

    def check_health(self) -> None:
        if self.server is not None and self.server.process is not None and self.server.process.poll() is not None:
            raise RuntimeError(f"judge server exited with code {self.server.process.returncode}")

    def __del__(self):
        if getattr(self, "server", None) is not None:
            self.server.stop()


class EmbedderDeployment:
    """Cosine similarities of (answer, reference) pairs; concurrent requests are merged into one model batch."""

    def __init__(self, cfg: MedixConfig):
        self.similarity = EmbeddingSimilarity(
            SentenceTransformerEmbedder(cfg.reward.embedding.model, batch_size=cfg.reward.embedding.batch_size),
            cache_bytes=int(cfg.serve.embedder_cache_mb * 2**20),
        )

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _batched(self, requests: list[tuple[list[str], list[str]]]) -> list[np.ndarray]:
        answers = [a for req in requests for a in req[0]]
        references = [r for req in requests for r in req[1]]
        cosines = await self.similarity.acosines(answers, references)
        out, start = [], 0
        for req in requests:
            out.append(cosines[start : start + len(req[0])])
            start += len(req[0])
        return out

    async def cosines(self, answers: list[str], references: list[str]) -> np.ndarray:
        return await self._batched((answers, references))


class _HandleJudge:
    """The judge deployment seen as a Judge. A replica that dies mid-call is retried on another (Serve
    restarts it); if the deployment stays unreachable, every prompt comes back as `judge_error`."""

    def __init__(self, handle: DeploymentHandle, attempts: int = 3, backoff_s: float = 1.0):
        self.handle = handle
        self.attempts = attempts
        self.backoff_s = backoff_s

    async def verdicts(self, prompts):
        if not prompts:
            return []
        error = ""
        for attempt in range(self.attempts):
            try:
                return await self.handle.verdicts.remote(list(prompts))
            except Exception as exc:  # RayActorError, Serve routing errors: the replica is gone or restarting
                error = redact_text(f"{type(exc).__name__}: {exc}")[:300]
                logger.warning("judge deployment call failed (attempt %d/%d): %s", attempt + 1, self.attempts, error)
                await asyncio.sleep(self.backoff_s * 2**attempt)
        return [JudgeVerdict(None, "judge_error", attempts=self.attempts, error=error) for _ in prompts]


class _HandleSimilarity:
    """The embedder deployment seen as a Similarity; failures propagate to the scorer, which marks embed_error."""

    def __init__(self, handle: DeploymentHandle, attempts: int = 3, backoff_s: float = 1.0):
        self.handle = handle
        self.attempts = attempts
        self.backoff_s = backoff_s

    async def acosines(self, answers, references):
        for attempt in range(self.attempts):
            try:
                return await self.handle.cosines.remote(list(answers), list(references))
            except Exception:
                if attempt == self.attempts - 1:
                    raise
                await asyncio.sleep(self.backoff_s * 2**attempt)


class RewardRequestItem(BaseModel):
    id: str = Field(..., max_length=512)
    question: str = Field("", max_length=MAX_FIELD_CHARS)
    response: str = Field(..., max_length=MAX_FIELD_CHARS)
    reference: str = Field(..., max_length=MAX_FIELD_CHARS, description="the dataset's solution: `<TAG> answer`")


class RewardRequest(BaseModel):
    items: list[RewardRequestItem] = Field(..., max_length=MAX_ITEMS_PER_REQUEST)


class RewardResponse(BaseModel):
    results: list[RewardBreakdown]  # the library's record, so the HTTP schema cannot drift from it
    preset: str
    unscored: int
    seconds: float


api = FastAPI(
    title="medix-ray reward service",
    version="1",
    description="The MediX-R1 composite reward (LLM judge, embedding, format, modality).",
)


api.state.token = ""
api.state.max_body_bytes = 0  # set from serve.max_body_bytes by the ingress; 0 refuses every body until then
api.add_middleware(BodyLimit, max_bytes=lambda: api.state.max_body_bytes)


@api.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A 422 that names each bad field and the problem, with the offending input shortened, never echoed whole."""
    return JSONResponse(status_code=422, content=validation_error_body(exc.errors()))


def _auth(request: Request) -> None:
    token = request.app.state.token
    if token and not token_matches(request.headers.get("authorization"), token):
        raise HTTPException(status_code=401, detail="missing or wrong bearer token")


def _bound_hosts(cfg: MedixConfig) -> list[str]:
    """Returns the hosts the service is reachable on: `serve.host` and, when Serve tells, its proxy's bind address
    (under `serve run` or KubeRay the proxy may bind another address than the config names)."""
    hosts = [cfg.serve.host]
    try:
        from ray.serve.context import _get_global_client

        proxy_host = _get_global_client().http_config.host
    except Exception as exc:  # outside a cluster, or the private API moved: the configured host decides
        logger.debug("Serve proxy host unknown (%s); checking serve.host only", type(exc).__name__)
    else:
        if proxy_host and proxy_host not in hosts:
            hosts.append(proxy_host)
    return hosts


@serve.ingress(api)
class RewardIngress:
    """HTTP and handle entry point: rules here, judge and embedder through their handles."""

    def __init__(self, cfg: MedixConfig, judge: DeploymentHandle, embedder: DeploymentHandle):
        self.spec = RewardSpec.from_config(cfg)
        self.scorer = CompositeScorer(self.spec, _HandleJudge(judge), _HandleSimilarity(embedder))
        # The token is read from the environment variable the config names; it is never logged.
        token = os.environ.get(cfg.serve.auth_token_env, "")
        check_auth_policy(
            _bound_hosts(cfg),
            token=token,
            allow_unauthenticated=cfg.serve.allow_unauthenticated,
            token_env=cfg.serve.auth_token_env,
        )
        api.state.token = token
        api.state.max_body_bytes = cfg.serve.max_body_bytes

    async def score(self, items: list[RewardItem]) -> list[RewardBreakdown]:
        """Handle API: the same breakdowns as POST /v1/rewards, typed (the trainer's path)."""
        for item in items:  # the HTTP route's checks (sizes, types), errors naming the field
            RewardRequestItem(id=item.id, question=item.question, response=item.response, reference=item.reference)
        return await self.scorer.score(items)

    @api.post("/v1/rewards", response_model=RewardResponse, dependencies=[Depends(_auth)])
    async def rewards(self, request: RewardRequest) -> RewardResponse:
        start = time.monotonic()
        items = [RewardItem(i.id, i.question, i.response, i.reference) for i in request.items]
        out = await self.scorer.score(items)
        return RewardResponse(
            results=out,
            preset=self.spec.preset,
            unscored=sum(not bd.scored for bd in out),
            seconds=time.monotonic() - start,
        )

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok", "preset": self.spec.preset}


def build_reward_app(cfg: MedixConfig) -> serve.Application:
    """Returns the bound application for a config (replica counts and autoscaling from `serve`)."""
    s = cfg.serve

    def autoscaling(min_r: int, max_r: int) -> dict[str, Any]:
        return {
            "min_replicas": min_r,
            "max_replicas": max_r,
            "initial_replicas": min_r,
            "target_ongoing_requests": s.target_ongoing_requests,
            "upscale_delay_s": s.upscale_delay_s,
            "downscale_delay_s": s.downscale_delay_s,
            "metrics_interval_s": s.metrics_interval_s,
            "look_back_period_s": s.look_back_period_s,
        }

    judge = (
        serve.deployment(JudgeDeployment)
        .options(
            name=JUDGE_DEPLOYMENT,
            autoscaling_config=autoscaling(s.judge_min_replicas, s.judge_max_replicas),
            max_ongoing_requests=s.judge_max_ongoing_requests,
            ray_actor_options={"num_cpus": s.judge_num_cpus, "num_gpus": s.judge_num_gpus},
        )
        .bind(cfg)
    )
    embedder = (
        serve.deployment(EmbedderDeployment)
        .options(
            name="embedder",
            autoscaling_config=autoscaling(s.embedder_min_replicas, s.embedder_max_replicas),
            max_ongoing_requests=32,
            ray_actor_options={"num_cpus": s.embedder_num_cpus, "num_gpus": s.embedder_num_gpus},
        )
        .bind(cfg)
    )
    return (
        serve.deployment(RewardIngress)
        .options(
            name="ingress",
            autoscaling_config=autoscaling(s.ingress_min_replicas, s.ingress_max_replicas),
            max_ongoing_requests=64,
            ray_actor_options={"num_cpus": s.ingress_num_cpus},
            # A refused start (no token on an exposed host) is a config error: fail in seconds, not 20 restarts.
            max_constructor_retry_count=3,
        )
        .bind(cfg, judge, embedder)
    )


def build_app(args: dict[str, str]) -> serve.Application:
    """`serve run deployments.reward_app:build_app config=FILE [key=value ...]` entry point."""
    args = dict(args)
    path = args.pop("config", None)
    return build_reward_app(load_config(path, [f"{k}={v}" for k, v in args.items()]))


def start_reward_service(
    cfg: MedixConfig, *, address: str | None = None, num_cpus: int | None = None, name: str = "medix-rewards"
) -> str:
    """Deploys the reward app (starting or joining a Ray cluster: `medix_ray.environment.init_ray`) and returns
    its base URL.

    A local cluster on a small CPU machine gets at least 4 logical CPUs, so that the fractional
    replicas can scale out (docs/cpu_notes.md: oversubscribe logical CPUs on 2 cores).
    """
    from medix_ray.console import current
    from medix_ray.environment import init_ray

    console = current()
    if address is None:
        # A local cluster (started here, or earlier by this process) has this environment, so the replicas'
        # check can be made here, before anything starts; a cluster we join is checked by the ingress replicas.
        check_auth_policy(
            cfg.serve.host,
            token=os.environ.get(cfg.serve.auth_token_env, ""),
            allow_unauthenticated=cfg.serve.allow_unauthenticated,
            token_env=cfg.serve.auth_token_env,
        )
    init_ray(address, num_cpus=num_cpus)
    serve.start(
        http_options={"host": cfg.serve.host, "port": cfg.serve.port}, logging_config=console.serve_logging_config()
    )
    serve.run(build_reward_app(cfg), name=name, route_prefix="/")
    return f"http://{cfg.serve.host}:{cfg.serve.port}"

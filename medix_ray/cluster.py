"""Re-exports medix_ray/environment/node.py's `local_dashboard` and `worker_env` for the modules that still
import them from here (medix_ray/trainer/controller.py, medix_ray/eval/pipeline.py); new code imports
`medix_ray.environment.node`, or starts Ray with `medix_ray.environment.ray_init.init_ray`."""

from medix_ray.environment.node import local_dashboard, worker_env

__all__ = ["local_dashboard", "worker_env"]

"""Runs an evaluation (on the Ray cluster at an address, or a local one) and prints what it produced."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from medix_ray.config import MedixConfig
from medix_ray.data.images import PixelBounds
from medix_ray.eval.pipeline import PHASES, EvalResult, run_evaluation


def evaluate(
    cfg: MedixConfig,
    model: str,
    *,
    address: str | None = None,
    phases: Iterable[str] = PHASES,
    progress: bool | None = None,
) -> EvalResult:
    """Runs the phases for `model` and prints a summary; a local Ray cluster it started is shut down after."""
    import ray

    connected = ray.is_initialized()
    try:
        result = run_evaluation(
            cfg.eval,
            model,
            phases=phases,
            rollout_cfg=cfg.rollout,
            pixel_bounds=PixelBounds.from_config(cfg.data),
            progress=sys.stderr.isatty() if progress is None else progress,
            address=address,
        )
    finally:
        if not connected and ray.is_initialized():
            ray.shutdown()
    print(format_result(result))
    return result


def format_result(result: EvalResult) -> str:
    """Returns the lines printed at the end of a run: work done, overall score per protocol, files."""
    judged = ", ".join(f"{p} {n}" for p, n in result.judged.items()) or "0"
    lines = [f"{result.items} item(s); answered in this run: {result.generated}; judged in this run: {judged}"]
    for protocol, table in result.tables.items():
        o = table.overall
        acc = "n/a" if o.accuracy is None else f"{100 * o.accuracy:.1f}%"
        ci = "" if o.ci is None else f" (95% CI {100 * o.ci[0]:.1f}-{100 * o.ci[1]:.1f})"
        errors = ", ".join(f"{k} {v}" for k, v in table.errors.items() if v) or "none"
        lines.append(f"{protocol} protocol: overall {acc}{ci}; errors: {errors}; complete: {o.complete}")
    for name, path in result.files.items():
        lines.append(f"{name}: {path}")
    return "\n".join(lines)

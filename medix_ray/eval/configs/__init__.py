"""The evaluation's data files, shipped inside the package so that an installed wheel finds them.

tasks.yaml        the task registry (read by medix_ray.eval.tasks.load_registry)
leaderboard.yaml  the published MediX-R1 table (read by medix_ray.eval.score.load_leaderboard)

>>> from medix_ray.eval.configs import packaged
>>> packaged("tasks.yaml").is_file()
True
>>> packaged("leaderboard.yaml").read_text(encoding="utf-8").startswith("#")
True
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable


def packaged(name: str) -> Traversable:
    """Returns the packaged data file `name` of this folder (through importlib.resources, so zips work too)."""
    return resources.files(__name__).joinpath(name)

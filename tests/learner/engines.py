"""Engines of the learner tests only."""

from medix_ray.learner.update import TorchEngine


class GradientOnlyEngine(TorchEngine):
    """A TorchEngine whose optimizer never steps: the gradients of a whole update accumulate on the
    parameters, for the tests that compare them."""

    def step(self) -> None:
        pass

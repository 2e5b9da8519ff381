"""Image sizing: the one function that brings every image to the run's pixel budget.

The reference resizes each image, keeping its aspect ratio, so that width × height lies in
[`data.min_pixels`, `data.max_pixels`] before the processor sees it (docs/method.md §1.2). The
rollout replicas, the learner batch and the evaluation's candidate all call `fit_pixels`, so the
policy sees the same pixels — and the learner recomputes the same log-probs — everywhere.
The Qwen-VL processor then only rounds each side to its patch multiple.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PixelBounds:
    """The pixel budget of one image: `min_pixels <= width * height <= max_pixels` after fitting."""

    min_pixels: int = 3136
    max_pixels: int = 262144

    def __post_init__(self) -> None:
        if self.min_pixels < 1 or self.max_pixels < self.min_pixels:
            raise ValueError(
                f"pixel bounds need 1 <= data.min_pixels <= data.max_pixels; got {self.min_pixels}, {self.max_pixels}"
            )

    @classmethod
    def from_config(cls, data_cfg: Any) -> PixelBounds:
        return cls(data_cfg.min_pixels, data_cfg.max_pixels)


def fitted_size(width: int, height: int, bounds: PixelBounds) -> tuple[int, int]:
    """Returns the (width, height) an image of this size is resized to (unchanged when within bounds).

    The aspect ratio is kept; a large image is scaled down (sides rounded down, so the area stays
    under `max_pixels`), a small one up (sides rounded up, so it reaches `min_pixels`).
    """
    area = width * height
    if area > bounds.max_pixels:
        scale = math.sqrt(bounds.max_pixels / area)
        return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
    if area < bounds.min_pixels:
        scale = math.sqrt(bounds.min_pixels / area)
        w, h = math.ceil(width * scale), math.ceil(height * scale)
        if w * h > bounds.max_pixels:  # rounding up overshot a narrow window: trim the longer side
            w, h = (w - 1, h) if w >= h else (w, h - 1)
        return w, h
    return width, height


def fit_pixels(image: Any, bounds: PixelBounds) -> Any:
    """Returns the RGB `PIL.Image` resized into `bounds` (bicubic), or the image itself when it fits."""
    from PIL import Image

    if image.mode != "RGB":
        image = image.convert("RGB")
    size = fitted_size(image.width, image.height, bounds)
    return image if size == image.size else image.resize(size, Image.Resampling.BICUBIC)


def load_fitted(sample: Any, bounds: PixelBounds) -> list[Any]:
    """Returns a sample's decoded images, each fitted into `bounds`, in order."""
    return [fit_pixels(image, bounds) for image in sample.load_images()]

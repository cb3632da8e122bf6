"""Preprocessing that travels with each encoder: one frozen config, one function.

``prepare_image`` runs on the CPU (in a thread pool in the service) and returns uint8 HWC
pixels at the model's input size. Float conversion and mean/std normalisation happen on the
model's device, so the host moves 4x fewer bytes and index and query share one code path.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from PIL import Image

__all__ = ["PreprocessConfig", "prepare_batch", "prepare_image"]

ResizePolicy = Literal["squash", "shorter_center_crop", "longer_pad"]

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


@dataclass(frozen=True)
class PreprocessConfig:
    """How an RGB image becomes model input.

    Attributes:
        input_size: side of the square model input, in pixels.
        resize: ``squash`` (whole image, aspect not kept: best for copy detection, nothing is
            cut away), ``shorter_center_crop`` (ImageNet style, ``crop_pct`` of the shorter side),
            or ``longer_pad`` (letterbox on ``pad_value``).
        crop_pct: fraction kept by ``shorter_center_crop``.
        mean, std: per-channel normalisation in the 0..1 range, applied on the model's device.
        interpolation: PIL resampling filter name.
        pad_value: RGB fill for ``longer_pad``.
    """

    input_size: int
    resize: ResizePolicy = "squash"
    crop_pct: float = 1.0
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    pad_value: tuple[int, int, int] = (0, 0, 0)

    def with_size(self, input_size: int) -> PreprocessConfig:
        return replace(self, input_size=input_size)

    def to_dict(self) -> dict[str, object]:
        return {
            "input_size": self.input_size,
            "resize": self.resize,
            "crop_pct": self.crop_pct,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }


def prepare_image(image: Image.Image, config: PreprocessConfig) -> np.ndarray:
    """Resize an RGB PIL image per ``config``; returns uint8 array (S, S, 3)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    size = config.input_size
    resample = _RESAMPLE[config.interpolation]
    width, height = image.size
    if config.resize == "squash":
        out = image.resize((size, size), resample, reducing_gap=3.0)
    elif config.resize == "shorter_center_crop":
        scale_size = round(size / config.crop_pct)
        ratio = scale_size / min(width, height)
        new_w, new_h = max(size, round(width * ratio)), max(size, round(height * ratio))
        resized = image.resize((new_w, new_h), resample, reducing_gap=3.0)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        out = resized.crop((left, top, left + size, top + size))
    elif config.resize == "longer_pad":
        ratio = size / max(width, height)
        new_w, new_h = max(1, round(width * ratio)), max(1, round(height * ratio))
        resized = image.resize((new_w, new_h), resample, reducing_gap=3.0)
        out = Image.new("RGB", (size, size), config.pad_value)
        out.paste(resized, ((size - new_w) // 2, (size - new_h) // 2))
    else:  # pragma: no cover - Literal guards this for typed callers
        raise ValueError(f"unknown resize policy {config.resize!r}")
    return np.asarray(out, dtype=np.uint8)


def prepare_batch(images: list[Image.Image], config: PreprocessConfig) -> np.ndarray:
    """Stack prepared images into a uint8 (N, S, S, 3) array."""
    if not images:
        return np.zeros((0, config.input_size, config.input_size, 3), dtype=np.uint8)
    return np.stack([prepare_image(image, config) for image in images])

"""The encoder interface shared by every model, and a torch implementation helper."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from encoders.preprocess import PreprocessConfig, prepare_image

__all__ = ["Encoder", "EncoderInfo", "l2_normalize"]


@dataclass(frozen=True)
class EncoderInfo:
    """What a decision records about the model that made it."""

    name: str
    version: str
    dim: int
    metric: str = "IP"

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.version}"


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32; zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class Encoder(abc.ABC):
    """Turns RGB images into L2-normalised float32 embeddings.

    The work is split so a pipeline can overlap it: :meth:`prepare` (CPU, thread-safe, one image)
    and :meth:`embed_prepared` (the model, one batch). :meth:`embed` does both.
    """

    name: str
    version: str
    dim: int
    preprocess: PreprocessConfig
    device: str = "cpu"

    @property
    def info(self) -> EncoderInfo:
        return EncoderInfo(self.name, self.version, self.dim)

    @property
    def draft_size(self) -> int:
        """Smallest decode size that loses nothing for this model (JPEG draft mode).

        Draft mode keeps each side >= this. ``squash`` and ``longer_pad`` never need more than the
        input size; ``shorter_center_crop`` first scales the shorter side to ``input_size /
        crop_pct`` (256 for 224 at 0.875), so a draft at the input size alone would be upscaled.
        """
        config = self.preprocess
        if config.resize == "shorter_center_crop":
            return max(config.input_size, round(config.input_size / config.crop_pct))
        return config.input_size

    def prepare(self, image: Image.Image) -> np.ndarray:
        """Resize one RGB image to model input: uint8 (S, S, 3)."""
        return prepare_image(image, self.preprocess)

    @abc.abstractmethod
    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        """Encode a uint8 (N, S, S, 3) batch; returns float32 (N, dim), L2-normalised."""

    def embed(self, images: Sequence[Image.Image], *, batch_size: int = 32) -> np.ndarray:
        """Encode PIL images in batches; returns float32 (N, dim), L2-normalised."""
        chunks = []
        for start in range(0, len(images), batch_size):
            prepared = np.stack([self.prepare(image) for image in images[start : start + batch_size]])
            chunks.append(self.embed_prepared(prepared))
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, version={self.version!r}, "
            f"dim={self.dim}, device={self.device!r})"
        )

"""A torch ``nn.Module`` wrapped as an :class:`Encoder`: normalise on device, run, L2-normalise."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from encoders.base import Encoder
from encoders.device import resolve_device, resolve_dtype
from encoders.preprocess import PreprocessConfig

__all__ = ["TorchEncoder"]


class TorchEncoder(Encoder):
    """Runs ``module`` on uint8 NHWC batches.

    ``module`` maps a normalised float NCHW batch to (N, D) features. On CUDA the input goes
    through pinned memory, the model runs in fp16 (or the given dtype) and channels_last.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        name: str,
        version: str,
        dim: int,
        preprocess: PreprocessConfig,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype | None = None,
        channels_last: bool | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.dim = dim
        self.preprocess = preprocess
        self._device = resolve_device(device)
        self.device = str(self._device)
        self._dtype = resolve_dtype(dtype, self._device)
        use_channels_last = self._device.type == "cuda" if channels_last is None else channels_last
        self._memory_format = torch.channels_last if use_channels_last else torch.contiguous_format
        module = module.eval().to(device=self._device, dtype=self._dtype)
        module = module.to(memory_format=self._memory_format)
        for param in module.parameters():
            param.requires_grad_(False)
        self.module = module
        scale = 255.0
        self._mean = torch.tensor(preprocess.mean, device=self._device).view(1, 3, 1, 1) * scale
        self._std = torch.tensor(preprocess.std, device=self._device).view(1, 3, 1, 1) * scale

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def to_input(self, batch: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> normalised (N, 3, H, W) on the device, in the model dtype."""
        array = np.ascontiguousarray(batch)
        if not array.flags.writeable:  # torch.from_numpy needs a writable buffer
            array = array.copy()
        tensor = torch.from_numpy(array)
        if self._device.type == "cuda":
            tensor = tensor.pin_memory().to(self._device, non_blocking=True)
        tensor = tensor.permute(0, 3, 1, 2).float()
        tensor = (tensor - self._mean) / self._std
        return tensor.to(dtype=self._dtype, memory_format=self._memory_format)

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            features = self.module(self.to_input(batch)).float()
            features = torch.nn.functional.normalize(features, dim=1)
        return features.cpu().numpy().astype(np.float32, copy=False)

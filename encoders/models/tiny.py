"""``test-tiny``: a small random-init CNN in the real registry, for fast tests of the real path.

Its embeddings mean nothing semantically; seeded, so they are deterministic.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from encoders.preprocess import PreprocessConfig
from encoders.registry import register_encoder
from encoders.torch_encoder import TorchEncoder

__all__: list[str] = []


def _build(dim: int) -> nn.Module:
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, dim),
    )
    torch.random.set_rng_state(generator_state)
    return module


@register_encoder("test-tiny")
def test_tiny(
    *, device: str = "auto", dtype: Any = None, input_size: int = 64, dim: int = 32, **_: Any
) -> TorchEncoder:
    return TorchEncoder(
        _build(dim),
        name="test-tiny",
        version="0",
        dim=dim,
        preprocess=PreprocessConfig(input_size=input_size),
        device=device,
        dtype=dtype,
    )

"""Pick the torch device: ``auto`` prefers CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import torch

from encoders.errors import EncoderError

__all__ = ["resolve_device", "resolve_dtype"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return a concrete device; ``auto`` picks ``cuda``, then ``mps``, then ``cpu``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise EncoderError(f"unknown device {device!r}: expected auto, cpu, cuda[:N] or mps") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise EncoderError(
                f"device {device!r} requested but CUDA is not available; use --device cpu or auto"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise EncoderError(
                f"device {device!r} requested but only {count} CUDA device(s) are visible "
                f"(cuda:0..cuda:{count - 1}); check CUDA_VISIBLE_DEVICES"
            )
    if resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise EncoderError(
                f"device {device!r} requested but MPS is not available; use --device cpu or auto"
            )
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/``auto`` means fp16 on CUDA, float32 elsewhere (CPU half kernels are slow)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if dtype not in table:
        raise EncoderError(f"unknown dtype {dtype!r}: expected one of {sorted(table)}")
    return table[dtype]

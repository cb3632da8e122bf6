"""Preprocessing resolved from a timm model's pretrained config: argument > model config > default."""

from __future__ import annotations

from typing import Any, cast, get_args

from torch import nn

from encoders.errors import EncoderError
from encoders.preprocess import PreprocessConfig, ResizePolicy

__all__: list[str] = []

_RESIZE_POLICIES = get_args(ResizePolicy)
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box")
# timm's crop_mode -> our resize policy ("border" crops like "center" but pads; close enough here)
_CROP_MODES = {"center": "shorter_center_crop", "border": "shorter_center_crop", "squash": "squash"}


def check_preprocess_args(
    *,
    resize: str | None = None,
    interpolation: str | None = None,
    input_size: int | None = None,
    crop_pct: float | None = None,
) -> None:
    """Reject bad preprocessing arguments when the encoder is built, not at the first image."""
    if resize is not None and resize not in _RESIZE_POLICIES:
        raise EncoderError(
            f"resize={resize!r} is not a resize policy; expected one of {list(_RESIZE_POLICIES)}"
        )
    if interpolation is not None and interpolation not in _INTERPOLATIONS:
        raise EncoderError(
            f"interpolation={interpolation!r} is not supported; expected one of {list(_INTERPOLATIONS)}"
        )
    if input_size is not None and (not isinstance(input_size, int) or input_size < 8):
        raise EncoderError(f"input_size must be an int >= 8 pixels; got {input_size!r}")
    if crop_pct is not None and not 0.0 < crop_pct <= 1.0:
        raise EncoderError(f"crop_pct must be in (0, 1]; got {crop_pct!r}")


def preprocess_from_timm(
    model: nn.Module,
    *,
    input_size: int | None = None,
    resize: str | None = None,
    crop_pct: float | None = None,
    mean: Any = None,
    std: Any = None,
    interpolation: str | None = None,
) -> PreprocessConfig:
    """The model's timm data config as a :class:`PreprocessConfig`; given arguments win."""
    from timm.data import resolve_model_data_config

    check_preprocess_args(
        resize=resize, interpolation=interpolation, input_size=input_size, crop_pct=crop_pct
    )
    args = {
        "input_size": (3, input_size, input_size) if input_size else None,
        "crop_pct": crop_pct,
        "mean": tuple(mean) if mean is not None else None,
        "std": tuple(std) if std is not None else None,
        "interpolation": interpolation,
    }
    cfg = resolve_model_data_config(model, args={k: v for k, v in args.items() if v is not None})
    _, height, width = cfg["input_size"]
    cfg_interpolation = cfg.get("interpolation", "bilinear")
    if cfg_interpolation not in _INTERPOLATIONS:
        cfg_interpolation = "bicubic"
    policy = resize or _CROP_MODES.get(cfg.get("crop_mode", "center"), "shorter_center_crop")
    return PreprocessConfig(
        input_size=int(max(height, width)),
        resize=cast(ResizePolicy, policy),
        crop_pct=float(cfg.get("crop_pct") or 1.0),
        mean=cast(tuple[float, float, float], tuple(float(v) for v in cfg["mean"])),
        std=cast(tuple[float, float, float], tuple(float(v) for v in cfg["std"])),
        interpolation=cfg_interpolation,
    )

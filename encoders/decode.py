"""Bytes to a loaded RGB image, with limits; every bad input becomes a :class:`DecodeError`.

    >>> image = decode_image(payload, draft_size=encoder.draft_size)

What is accepted: JPEG (and camera MPO), PNG (and APNG), WebP, GIF, BMP, TIFF, and AVIF where
this Pillow build supports it. Animated images give their first frame. EXIF orientation is applied
(a corrupt EXIF block is ignored: the image comes out un-rotated). Every mode becomes RGB:
alpha (RGBA, LA, palette or greyscale with a transparency key) is composited on ``background``;
CMYK and YCbCr are converted; 16-bit, 32-bit integer and float greyscale are scaled to 8 bits
(see :func:`_scale_to_uint8`), never clipped.

Checks, in order, each with its ``reason``:

========================  ==========================================================================
``empty``                 zero bytes.
``too_large``             more than ``max_bytes`` bytes (checked before any parsing).
``not_an_image``          no supported image signature: text, HTML, JSON, PDF, archives, random bytes.
``unsupported_format``    a real image format we refuse on purpose: SVG (found by content), PSD,
                          EPS/PostScript (Pillow would run Ghostscript), HEIC, JPEG 2000, JPEG XL,
                          ICO, PNM, DDS, ... Convert to JPEG/PNG/WebP before sending.
``too_many_pixels``       width x height from the header above ``max_pixels``, checked before any
                          pixel is decoded; Pillow's own decompression-bomb guard
                          (``Image.MAX_IMAGE_PIXELS``) maps here too.
``bad_dimensions``        a side shorter than ``min_side`` (8 px) or an aspect ratio above
                          ``max_aspect`` (50:1): banners, spacer GIFs and 1-px tracking images carry no
                          content a copy detector can use, and squashing them to a square input is
                          meaningless.
``truncated``             the file ends before the image data does (Pillow's
                          ``LOAD_TRUNCATED_IMAGES`` is never turned on: half an image is not the image).
``corrupt``               anything else the decoder rejects.
========================  ==========================================================================
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import struct

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile

from encoders.errors import DecodeError

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "content_hash", "decode_image", "pixel_hash"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MIN_SIDE = 8
DEFAULT_MAX_ASPECT = 50.0

# Pillow plugin names we let Image.open try. "MPO" is produced by the JPEG opener, not a key itself.
_WANTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")
_FIX_HINT = "re-encode it as JPEG, PNG or WebP before sending"


def _open_formats() -> tuple[str, ...]:
    Image.init()
    return tuple(name for name in _WANTED_FORMATS if name in Image.OPEN)


def _supported_names() -> str:
    names = "JPEG, PNG, WebP, GIF, BMP, TIFF"
    return names + ", AVIF" if "AVIF" in _open_formats() else names


# ---------------------------------------------------------------------------------------- sniffing

_BMP_DIB_HEADER_SIZES = {struct.pack("<I", size) for size in (12, 16, 40, 52, 56, 64, 108, 124)}
_BMFF_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"msf1"}
_BMFF_AVIF_BRANDS = {b"avif", b"avis"}


def _allowed_kind(head: bytes) -> str | None:
    """The supported format ``head`` starts like, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head.startswith(b"BM") and head[14:18] in _BMP_DIB_HEADER_SIZES:
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[4:8] == b"ftyp" and head[8:12] in _BMFF_AVIF_BRANDS and "AVIF" in _open_formats():
        return "AVIF"
    return None


def _unsupported_kind(head: bytes) -> str | None:
    """A real image format we refuse on purpose, or None."""
    if head.startswith(b"8BPS"):
        return "Photoshop PSD"
    if head.startswith(b"%!PS") or head.startswith(b"\xc5\xd0\xd3\xc6"):
        return "PostScript/EPS"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _BMFF_HEIF_BRANDS or brand == b"mif1":
            return "HEIF/HEIC"
        if brand in _BMFF_AVIF_BRANDS:
            return "AVIF (not supported by this Pillow build)"
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or head.startswith(b"\xff\x4f\xff\x51"):
        return "JPEG 2000"
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return "JPEG XL"
    if head.startswith(b"\x00\x00\x01\x00") or head.startswith(b"\x00\x00\x02\x00"):
        return "ICO/CUR icon"
    if head.startswith(b"icns"):
        return "Apple ICNS"
    if head.startswith(b"qoif"):
        return "QOI"
    if head.startswith(b"DDS "):
        return "DirectDraw DDS"
    if head.startswith(b"gimp xcf"):
        return "GIMP XCF"
    if head.startswith(b"\x76\x2f\x31\x01"):
        return "OpenEXR"
    if head.startswith(b"#?RADIANCE") or head.startswith(b"#?RGBE"):
        return "Radiance HDR"
    if head.startswith(b"SIMPLE  ="):
        return "FITS"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "DICOM"
    if len(head) >= 3 and head[:1] == b"P" and head[1:2] in b"1234567" and head[2:3] in b" \t\r\n":
        return "Netpbm (PBM/PGM/PPM)"
    if _looks_like_svg(head):
        return "SVG"
    return None


def _text_head(head: bytes) -> str | None:
    """The first bytes as lower-case text when they decode as text, else None."""
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    elif head.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return head.decode("utf-16", errors="strict").lstrip().lower()
        except UnicodeDecodeError:
            return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason != "unexpected end of data" or exc.start == 0:  # not a character cut by the window
            return None
        text = head[: exc.start].decode("utf-8")
    if any(ch < " " and ch not in "\t\r\n\f" for ch in text):
        return None
    return text.lstrip().lower()


def _looks_like_svg(head: bytes) -> bool:
    text = _text_head(head)
    if text is None:
        return False
    if text.startswith("<svg"):
        return True
    return text.startswith(("<?xml", "<!doctype svg", "<!--")) and "<svg" in text


def _describe(data: bytes) -> str:
    """What arrived, in a few words, for error messages."""
    head = data[:4096]
    if head.startswith(b"%PDF-"):
        return "a PDF document"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive (or an Office document)"
    if head.startswith(b"\x1f\x8b"):
        return "gzip-compressed data"
    text = _text_head(head)
    if text is not None:
        if text.startswith(("<!doctype html", "<html")) or "<html" in text[:1024]:
            return "an HTML document (often an error page or a web page instead of the image)"
        if text.startswith("<?xml") or text.startswith("<"):
            return "an XML document"
        if text.startswith(("{", "[")):
            return "JSON text"
        if text.startswith(("data:image", "ivborw0kggo", "/9j/")):
            return "base64/data-URL text (decode it to bytes first)"
        if text.startswith(("http://", "https://")):
            return "a URL (fetch it and send the bytes)"
        return "plain text"
    return f"unrecognised binary data starting with 0x{data[:8].hex()}"


def _declared_truncation(data: bytes) -> bool:
    """True when the file's own structure says bytes are missing at the end.

    Used only after Pillow failed, to tell ``truncated`` from ``corrupt``.
    """
    try:
        if data.startswith(b"\xff\xd8"):
            return not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            pos = 8
            while pos + 8 <= len(data):
                length, kind = struct.unpack(">I4s", data[pos : pos + 8])
                if kind == b"IEND":
                    return False
                pos += 12 + length
            return True
        if data[:4] == b"RIFF":
            return len(data) < 8 + struct.unpack("<I", data[4:8])[0]
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return not data.rstrip(b"\x00").endswith(b";")
        if data.startswith(b"BM"):
            return len(data) < 14 or len(data) < struct.unpack("<I", data[2:6])[0]
        if data[4:8] == b"ftyp":  # ISO base media (AVIF/HEIF): walk the top-level boxes
            pos = 0
            while pos + 8 <= len(data):
                size = struct.unpack(">I", data[pos : pos + 4])[0]
                if size == 1:
                    if pos + 16 > len(data):
                        return True
                    size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
                elif size == 0:
                    return False
                if size < 8:
                    return False
                pos += size
            return pos > len(data)
        if data[:4] in (b"II*\x00", b"MM\x00*"):  # the first IFD must be inside the file
            order = "<" if data[:2] == b"II" else ">"
            if len(data) < 8:
                return True
            offset = struct.unpack(order + "I", data[4:8])[0]
            if offset + 2 > len(data):
                return True
            entries = struct.unpack(order + "H", data[offset : offset + 2])[0]
            return offset + 2 + 12 * entries + 4 > len(data)
    except struct.error:
        return True
    return False


# ------------------------------------------------------------------------------------ conversion


def _scale_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """High-bit-depth greyscale to uint8, keeping the tonal range.

    ``I;16*``: the full 0..65535 range maps to 0..255 (divide by 257). ``I`` (32-bit int): data
    that fits 0..255 is kept, data that fits 0..65535 is treated as 16-bit, anything else is
    stretched min..max. ``F`` (float): 0..1 is scaled by 255, data within 0..255 is kept, anything
    else is stretched min..max. NaN and infinities become 0 first.
    """
    values = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if mode.startswith("I;16"):
        scaled = values / 257.0
    else:
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if mode == "F" and low >= 0.0 and high <= 1.0:
            scaled = values * 255.0
        elif low >= 0.0 and high <= 255.0:
            scaled = values
        elif mode != "F" and low >= 0.0 and high <= 65535.0:
            scaled = values / 257.0
        elif high > low:
            scaled = (values - low) * (255.0 / (high - low))
        else:
            scaled = np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _to_rgb(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Any Pillow mode to RGB; alpha composited on ``background``.

    An RGB ``image`` is returned as is (no copy): the caller passes a fresh image, never the
    opened file (see :func:`_apply_orientation`).
    """
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        grey = Image.fromarray(_scale_to_uint8(np.asarray(image), mode))
        return grey.convert("RGB")
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    if mode == "RGB":
        return image
    return image.convert("RGB")


def _apply_orientation(image: Image.Image) -> Image.Image:
    """A new image with the EXIF orientation applied; a corrupt EXIF block leaves it as stored.

    Always a new image (``exif_transpose`` copies when there is nothing to rotate), so
    :func:`_to_rgb` need not copy an RGB result again: one full-image copy per decode, not two.
    """
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # a broken EXIF must never lose the image: any parser error means "no rotation"
        logger.debug("ignoring unreadable EXIF orientation: %s: %s", type(exc).__name__, exc)
        return image.copy()


# --------------------------------------------------------------------------------------- decoding


def _fail(message: str, reason: str) -> DecodeError:
    return DecodeError(message, reason=reason)


def _classify_unidentified(data: bytes) -> DecodeError:
    head = data[:4096]
    kind = _allowed_kind(head)
    if kind is not None:
        if _declared_truncation(data):
            return _fail(
                f"expected a complete {kind} file; got {len(data)} bytes that end inside the header: "
                "the upload or download was cut short, send the whole file",
                "truncated",
            )
        return _fail(
            f"expected a {kind} file (its signature matched) but its header could not be parsed: "
            f"the file is damaged; {_FIX_HINT}",
            "corrupt",
        )
    refused = _unsupported_kind(head)
    if refused is not None:
        return _fail(
            f"expected a raster image ({_supported_names()}); got {refused}, which is deliberately not "
            f"decoded; {_FIX_HINT}",
            "unsupported_format",
        )
    return _fail(
        f"expected image bytes ({_supported_names()}); got {_describe(data)} ({len(data)} bytes); "
        "check that the producer sends the raw image file",
        "not_an_image",
    )


def _decode_failure(data: bytes, fmt: str, exc: BaseException) -> DecodeError:
    text = str(exc).lower()
    if isinstance(exc, EOFError) or "truncated" in text or _declared_truncation(data):
        return _fail(
            f"expected a complete {fmt} file; got {len(data)} bytes that stop before the image data "
            f"ends ({type(exc).__name__}: {exc}); the upload or download was cut short, send the whole file",
            "truncated",
        )
    return _fail(
        f"expected decodable {fmt} data; the decoder failed with {type(exc).__name__}: {exc}; "
        f"the file is damaged, {_FIX_HINT}",
        "corrupt",
    )


def _bomb(exc: Exception, max_pixels: int) -> DecodeError:
    """Pillow's own guard (``Image.MAX_IMAGE_PIXELS``) fired while reading the header."""
    declared = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(declared.group(1)):,} pixels" if declared else "more pixels than Pillow allows"
    limit = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or max_pixels))
    return _fail(
        f"expected at most {limit:,} pixels; the header declares {size} (Pillow's decompression-bomb "
        "guard refused it); downscale the image before sending",
        "too_many_pixels",
    )


def _check_geometry(
    width: int, height: int, fmt: str, *, max_pixels: int, min_side: int, max_aspect: float
) -> None:
    pixels = width * height
    if pixels > max_pixels:
        raise _fail(
            f"expected at most {max_pixels:,} pixels; the {fmt} header declares {width}x{height} "
            f"= {pixels:,} (a possible decompression bomb); downscale the image before sending or raise "
            "max_pixels",
            "too_many_pixels",
        )
    short, long = min(width, height), max(width, height)
    if short < min_side or long > max_aspect * short:
        raise _fail(
            f"expected each side >= {min_side} px and an aspect ratio <= {max_aspect:g}:1; got a "
            f"{width}x{height} {fmt}; such images (banners, spacers, tracking pixels) are not "
            "matched, send the actual picture",
            "bad_dimensions",
        )


def decode_image(
    data: bytes | bytearray | memoryview,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
    min_side: int = DEFAULT_MIN_SIDE,
    max_aspect: float = DEFAULT_MAX_ASPECT,
) -> Image.Image:
    """Decode image bytes into a loaded RGB :class:`PIL.Image.Image`.

    Args:
        data: the file's bytes (the name or extension it came with plays no part).
        max_bytes: larger payloads fail with ``too_large`` before parsing. Default 32 MiB.
        max_pixels: width x height from the header above this fails with ``too_many_pixels``
            before decoding. Default 40,000,000. Pillow's global ``Image.MAX_IMAGE_PIXELS`` guard
            still applies on top (at twice its value it refuses to open).
        draft_size: for JPEG only, let libjpeg decode at 1/2, 1/4 or 1/8 scale while each side
            stays >= ``draft_size`` (use ``encoder.draft_size``). Much faster for big photos.
        background: RGB colour transparent pixels are composited on. Default white.
        min_side, max_aspect: the ``bad_dimensions`` rule. Defaults 8 px and 50:1.

    Raises:
        DecodeError: with ``reason`` one of ``empty``, ``too_large``, ``not_an_image``,
            ``unsupported_format``, ``too_many_pixels``, ``bad_dimensions``, ``truncated``,
            ``corrupt``. Bad bytes never raise anything else.
        TypeError: ``data`` is not bytes-like (a programming error, not bad input).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"decode_image expects bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise _fail("expected image bytes; got an empty payload (0 bytes); check the producer", "empty")
    if len(data) > max_bytes:
        raise _fail(
            f"expected at most {max_bytes:,} bytes; got {len(data):,}; downscale or recompress the "
            "image before sending, or raise max_bytes",
            "too_large",
        )

    try:
        opened = Image.open(io.BytesIO(data), formats=_open_formats())
    except UnidentifiedImageError:
        raise _classify_unidentified(data) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(exc, max_pixels) from exc
    except Exception as exc:  # the boundary with Pillow's parsers: any failure here is about the bytes
        kind = _allowed_kind(data[:64])
        if kind is None:  # a plugin with a loose signature check (BMP: "BM") took text or noise
            raise _classify_unidentified(data) from exc
        raise _decode_failure(data, kind, exc) from exc

    with opened as image:
        fmt = image.format or "image"
        width, height = image.size
        _check_geometry(width, height, fmt, max_pixels=max_pixels, min_side=min_side, max_aspect=max_aspect)
        try:
            if draft_size is not None and isinstance(image, JpegImageFile):
                image.draft("RGB", (draft_size, draft_size))
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb(exc, max_pixels) from exc
        except Exception as exc:  # decoder errors come as OSError, SyntaxError, ValueError, struct.error...
            raise _decode_failure(data, fmt, exc) from exc
        oriented = _apply_orientation(image)
        try:
            return _to_rgb(oriented, background)
        except Exception as exc:  # an exotic mode Pillow cannot convert, e.g. a LAB or multi-band TIFF
            raise _fail(
                f"expected an image convertible to RGB; got a {fmt} in mode {oriented.mode!r} "
                f"({type(exc).__name__}: {exc}); {_FIX_HINT}",
                "unsupported_format",
            ) from exc


# ----------------------------------------------------------------------------------------- hashes


def content_hash(data: bytes | bytearray | memoryview) -> str:
    """SHA-256 hex digest of the raw bytes: the same file, byte for byte."""
    return hashlib.sha256(data).hexdigest()


def pixel_hash(image: Image.Image) -> str:
    """SHA-256 hex digest of mode, size and raw RGB pixels: the same picture in any lossless file.

    A PNG and a lossless WebP of the same pixels hash the same; metadata does not count.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    digest = hashlib.sha256()
    digest.update(f"{image.mode}:{image.width}x{image.height}:".encode("ascii"))
    digest.update(image.tobytes())
    return digest.hexdigest()

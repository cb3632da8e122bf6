"""decode_image: real files, real malformed files, and the reason each failure reports."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image, ImageFile, ImageOps, features

from encoders.decode import content_hash, decode_image, pixel_hash
from encoders.errors import DecodeError

FORMATS = ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"] + (["AVIF"] if features.check("avif") else [])


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A well-formed PNG whose header claims ``width`` x ``height`` but carries almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + png_chunk(b"IEND", b"")
    )


def jpeg_with_app1(image: Image.Image, payload: bytes) -> bytes:
    """A JPEG with an APP1 segment (EXIF) inserted right after SOI."""
    raw = encode(image, "JPEG")
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return raw[:2] + segment + raw[2:]


def reason_of(data: bytes, **options: object) -> str:
    with pytest.raises(DecodeError) as info:
        decode_image(data, **options)  # type: ignore[arg-type]
    assert str(info.value), "a DecodeError must explain itself"
    return info.value.reason


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A 96x64 RGB image with structure (gradients and a block), deterministic."""
    y, x = np.mgrid[0:64, 0:96]
    array = np.stack([x * 2, y * 3, (x + y) % 256], axis=-1).astype(np.uint8)
    array[20:40, 30:60] = (250, 30, 30)
    return Image.fromarray(array)


# ---------------------------------------------------------------------------------------- success


@pytest.mark.parametrize("fmt", FORMATS)
def test_supported_format_decodes_to_loaded_rgb(photo: Image.Image, fmt: str) -> None:
    image = decode_image(encode(photo, fmt))
    assert image.mode == "RGB"
    assert image.size == photo.size
    assert np.asarray(image).shape == (64, 96, 3)


def test_lossless_files_of_same_pixels_share_pixel_hash(photo: Image.Image) -> None:
    files = [
        encode(photo, "PNG"),
        encode(photo, "WEBP", lossless=True),
        encode(photo, "BMP"),
        encode(photo, "TIFF"),
    ]
    assert len({content_hash(data) for data in files}) == len(files)
    assert len({pixel_hash(decode_image(data)) for data in files}) == 1
    assert pixel_hash(decode_image(files[0])) != pixel_hash(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT))


def test_content_hash_is_sha256_of_the_bytes() -> None:
    assert content_hash(b"abc") == hashlib.sha256(b"abc").hexdigest()


def test_file_extension_plays_no_part(photo: Image.Image, tmp_path) -> None:
    path = tmp_path / "holiday.jpg"  # a PNG under a JPEG name
    path.write_bytes(encode(photo, "PNG"))
    assert pixel_hash(decode_image(path.read_bytes())) == pixel_hash(photo)


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (16, 1))
    data = encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    row = np.asarray(decode_image(data))[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert np.all(np.diff(row) >= 0)
    assert abs(row[128] - 128) <= 2  # mid-grey stays mid-grey: clipping would make it 255
    assert np.mean(row == 255) < 0.05


@pytest.mark.parametrize("mode", ["I", "F"])
def test_thirty_two_bit_tiff_uses_full_8_bit_range(mode: str) -> None:
    ramp = np.tile(np.linspace(-1000.0, 5_000_000.0, 200), (16, 1))
    array = ramp.astype(np.int32) if mode == "I" else ramp.astype(np.float32)
    image = Image.fromarray(array)
    assert image.mode == mode
    row = np.asarray(decode_image(encode(image, "TIFF")))[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row) >= 0)


def test_float_tiff_in_unit_range_scales_by_255() -> None:
    image = Image.fromarray(np.full((16, 16), 0.5, dtype=np.float32))
    assert np.asarray(decode_image(encode(image, "TIFF")))[0, 0, 0] in (127, 128)


def test_cmyk_jpeg_becomes_rgb() -> None:
    red = Image.new("CMYK", (32, 32), (0, 255, 255, 0))
    pixel = np.asarray(decode_image(encode(red, "JPEG", quality=95)))[16, 16].astype(int)
    assert pixel[0] > 230 and pixel[1] < 25 and pixel[2] < 25


@pytest.mark.parametrize(("background", "expected"), [((255, 255, 255), 255), ((0, 0, 0), 0)])
def test_rgba_is_composited_on_background(background: tuple[int, int, int], expected: int) -> None:
    image = Image.new("RGBA", (32, 32), (255, 0, 0, 255))
    image.paste((0, 0, 255, 0), (0, 0, 16, 32))  # left half fully transparent
    image.paste((0, 0, 0, 128), (16, 0, 24, 32))  # a half-transparent black strip
    out = np.asarray(decode_image(encode(image, "PNG"), background=background)).astype(int)
    assert out[5, 5].tolist() == [expected] * 3
    assert out[5, 28].tolist() == [255, 0, 0]
    assert abs(out[5, 20, 0] - round(expected * 127 / 255)) <= 1


def test_greyscale_alpha_is_composited() -> None:
    image = Image.new("LA", (16, 16), (0, 0))
    assert np.asarray(decode_image(encode(image, "PNG")))[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_is_composited(fmt: str) -> None:
    image = Image.new("P", (16, 16), 1)
    image.putpalette([0, 255, 0] + [255, 0, 0] + [0, 0, 0] * 254)
    image.paste(0, (0, 0, 8, 16))
    image.info["transparency"] = 0
    out = np.asarray(decode_image(encode(image, fmt, transparency=0), background=(10, 20, 30)))
    assert out[0, 0].tolist() == [10, 20, 30]
    assert out[0, 12].tolist() == [255, 0, 0]


def test_one_bit_image_becomes_rgb() -> None:
    image = Image.new("1", (16, 16), 0)
    image.paste(1, (8, 0, 16, 16))
    out = np.asarray(decode_image(encode(image, "PNG")))
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 15].tolist() == [255, 255, 255]


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_image_gives_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (24, 24), colour) for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    data = encode(
        frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True
    )
    with Image.open(io.BytesIO(data)) as opened:
        assert getattr(opened, "n_frames", 1) == 3
    pixel = np.asarray(decode_image(data))[12, 12].astype(int)
    assert pixel[0] > 240 and pixel[1] < 15 and pixel[2] < 15


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (60, 40), (255, 0, 0))
    image.paste((0, 0, 255), (30, 0, 60, 40))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90° clockwise turn
    out = decode_image(encode(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (40, 60)
    arr = np.asarray(out).astype(int)
    assert arr[10, 20, 0] > 200 and arr[10, 20, 2] < 50  # red is now on top
    assert arr[50, 20, 2] > 200 and arr[50, 20, 0] < 50  # blue at the bottom


_CORRUPT_EXIF = {
    "garbage": b"Exif\x00\x00" + b"\x13\x37" * 20,
    "not-tiff": b"Exif\x00\x00XX\x00\x2a\x00\x00\x00\x08",
    "ifd-offset-past-end": b"Exif\x00\x00MM\x00\x2a" + struct.pack(">I", 0xFFFFFF00),
    "entry-count-past-end": b"Exif\x00\x00MM\x00\x2a" + struct.pack(">IH", 8, 0xFFFF) + b"\x01\x12\x00\x03",
    "orientation-as-text": b"Exif\x00\x00MM\x00\x2a"
    + struct.pack(">IH", 8, 1)
    + struct.pack(">HHI", 0x0112, 2, 4)
    + b"abc\x00\x00\x00\x00\x00",
    "orientation-out-of-range": b"Exif\x00\x00MM\x00\x2a"
    + struct.pack(">IH", 8, 1)
    + struct.pack(">HHIHH", 0x0112, 3, 1, 99, 0)
    + b"\x00\x00\x00\x00",
    "truncated": b"Exif\x00\x00MM",
}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("payload", list(_CORRUPT_EXIF.values()), ids=list(_CORRUPT_EXIF))
def test_corrupt_exif_decodes_unrotated(payload: bytes) -> None:
    out = decode_image(jpeg_with_app1(Image.new("RGB", (60, 40), (200, 10, 10)), payload))
    assert out.size == (60, 40)


def test_exif_parser_failure_falls_back_to_stored_orientation(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(image: Image.Image, **_: object) -> Image.Image:
        raise SyntaxError("not a TIFF file")

    monkeypatch.setattr(ImageOps, "exif_transpose", broken)
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decode_image(encode(Image.new("RGB", (60, 40), "red"), "JPEG", exif=exif.tobytes()))
    assert out.size == (60, 40) and out.mode == "RGB"


@pytest.mark.parametrize("draft_size", [224, 300, 600])
def test_jpeg_draft_decodes_smaller_but_not_below_request(draft_size: int) -> None:
    big = Image.new("RGB", (2000, 1500), (90, 120, 150))
    data = encode(big, "JPEG")
    out = decode_image(data, draft_size=draft_size)
    assert min(out.size) >= draft_size
    assert out.size[0] < 2000 and out.size[1] < 1500
    assert decode_image(data).size == (2000, 1500)


def test_draft_is_ignored_for_non_jpeg() -> None:
    assert decode_image(encode(Image.new("RGB", (800, 600)), "PNG"), draft_size=100).size == (800, 600)


# ---------------------------------------------------------------------------------------- failures


def test_zero_bytes_is_empty() -> None:
    assert reason_of(b"") == "empty"


def test_payload_over_max_bytes_is_too_large(photo: Image.Image) -> None:
    data = encode(photo, "PNG")
    assert reason_of(data, max_bytes=len(data) - 1) == "too_large"
    decode_image(data, max_bytes=len(data))


_MINIMAL_PDF = (
    b"%PDF-1.4\n1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\n"
    b"2 0 obj <</Type /Pages /Kids [] /Count 0>> endobj\n"
    b"xref\n0 3\n0000000000 65535 f \ntrailer <</Size 3 /Root 1 0 R>>\nstartxref\n0\n%%EOF\n"
)
_NOT_IMAGES = {
    "text": (b"hello, this is not a picture\n", "plain text"),
    "text-starting-like-bmp": (b"BMW is a car brand, not a bitmap", "plain text"),
    "html": (b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body></body></html>", "HTML"),
    "json": (b'{"error": "not found"}', "JSON"),
    "pdf": (_MINIMAL_PDF, "PDF"),
    "random": (np.random.default_rng(7).bytes(4096), "binary"),
    "zip": (b"PK\x03\x04" + b"\x00" * 60, "ZIP"),
}


@pytest.mark.parametrize(("data", "described"), list(_NOT_IMAGES.values()), ids=list(_NOT_IMAGES))
def test_non_image_bytes_are_not_an_image(data: bytes, described: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_image(data)
    assert info.value.reason == "not_an_image"
    assert described in str(info.value)


_SVGS = {
    "plain": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10"/></svg>',
    "xml-prolog": b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>',
    "bom-doctype": b"\xef\xbb\xbf  \n<!DOCTYPE svg PUBLIC '-//W3C//DTD SVG 1.1//EN' 'x'>\n<svg></svg>",
    "comment-first": b"<!-- Generator: Illustrator -->\n<svg version='1.1'></svg>",
}


@pytest.mark.parametrize("data", list(_SVGS.values()), ids=list(_SVGS))
def test_svg_is_unsupported_format(data: bytes) -> None:
    assert reason_of(data) == "unsupported_format"


def test_eps_is_refused_without_running_ghostscript(
    photo: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = encode(photo, "EPS")
    assert data.startswith(b"%!PS")

    def no_ghostscript(*_: object, **__: object) -> None:
        raise AssertionError("Ghostscript must never be started")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", no_ghostscript)
    assert reason_of(data) == "unsupported_format"


def test_psd_is_unsupported_format() -> None:
    width, height = 16, 16
    header = b"8BPS" + struct.pack(">H6sHIIHH", 1, b"\x00" * 6, 3, height, width, 8, 3)
    sections = struct.pack(">III", 0, 0, 0)  # colour mode data, image resources, layers: all empty
    pixels = struct.pack(">H", 0) + b"\x80" * (3 * width * height)  # raw planar RGB
    assert reason_of(header + sections + pixels) == "unsupported_format"


def test_heic_is_unsupported_format() -> None:
    ftyp = struct.pack(">I", 24) + b"ftypheic" + struct.pack(">I", 0) + b"mif1heic"
    assert reason_of(ftyp + b"\x00" * 200) == "unsupported_format"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("keep", [0.5, 0.9, 40])
def test_truncated_file_is_truncated(photo: Image.Image, fmt: str, keep: float) -> None:
    data = encode(photo.resize((400, 300)), fmt)
    cut = int(len(data) * keep) if keep < 1 else int(keep)
    assert reason_of(data[:cut]) == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("fmt", ["WEBP", "GIF", "BMP", "TIFF"])
def test_truncated_other_formats_are_truncated(photo: Image.Image, fmt: str) -> None:
    data = encode(photo.resize((400, 300)), fmt)
    assert reason_of(data[: len(data) // 2]) == "truncated"


def test_progressive_jpeg_truncated_is_truncated(photo: Image.Image) -> None:
    data = encode(photo.resize((400, 300)), "JPEG", progressive=True)
    assert reason_of(data[: len(data) * 2 // 3]) == "truncated"


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_damaged_image_data_is_corrupt(photo: Image.Image, fmt: str) -> None:
    data = bytearray(encode(photo.resize((400, 300)), fmt))
    start = len(data) // 3
    data[start : start + 64] = bytes(range(64))  # overwrite compressed data, keep the file length
    assert reason_of(bytes(data)) == "corrupt"


@pytest.mark.parametrize("side", [7_000, 50_000])
def test_header_claiming_huge_size_is_refused_before_decoding(side: int) -> None:
    data = png_header_only(side, side)
    assert len(data) < 200
    with pytest.raises(DecodeError) as info:
        decode_image(data)
    assert info.value.reason == "too_many_pixels"
    assert f"{side * side:,}" in str(info.value)


def test_real_small_file_with_many_pixels_is_refused() -> None:
    data = encode(Image.new("L", (3000, 3000)), "PNG")
    assert len(data) < 50_000
    assert reason_of(data, max_pixels=4_000_000) == "too_many_pixels"


def test_pillow_bomb_guard_maps_to_too_many_pixels() -> None:
    over_pillow_limit = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 100
    data = png_header_only(over_pillow_limit, over_pillow_limit)
    assert reason_of(data, max_pixels=10**12) == "too_many_pixels"


@pytest.mark.parametrize("size", [(1, 100_000), (4, 4), (10, 600), (600, 7)])
def test_degenerate_dimensions_are_bad_dimensions(size: tuple[int, int]) -> None:
    assert reason_of(encode(Image.new("L", size), "PNG")) == "bad_dimensions"


def test_dimension_rule_edges_pass() -> None:
    assert decode_image(encode(Image.new("L", (8, 400)), "PNG")).size == (8, 400)  # 50:1 exactly


def test_non_bytes_argument_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        decode_image("not bytes")  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mutated_files_raise_only_decode_error(photo: Image.Image) -> None:
    rng = np.random.default_rng(1234)
    seeds = [encode(photo, fmt) for fmt in FORMATS]
    for i in range(300):
        data = bytearray(seeds[i % len(seeds)])
        operation = i % 3
        if operation == 0:
            for index in rng.integers(0, len(data), 8):
                data[index] = int(rng.integers(0, 256))
        elif operation == 1:
            data = data[: int(rng.integers(1, len(data)))]
        else:
            index = int(rng.integers(0, min(len(data), 120)))
            data[index] = int(rng.integers(0, 256))
        try:
            image = decode_image(bytes(data))
        except DecodeError as exc:
            assert exc.reason in {
                "not_an_image",
                "unsupported_format",
                "truncated",
                "corrupt",
                "too_many_pixels",
                "bad_dimensions",
            }
        else:
            assert image.mode == "RGB"

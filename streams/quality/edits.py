"""Seeded image edits for the copy-detection benchmark, in three levels of difficulty.

Every edit is a function ``(image, rng, ctx) -> (image, params)``: deterministic given the
``random.Random`` it is handed, implemented with Pillow and numpy only (AugLy's own ops are not
used: two of them fail on current Pillow/numpy; only its font and emoji files are). ``params``
records what was drawn, for the benchmark's ground truth.

Levels (as in the issue; DISC21's transforms grouped by how much of the original survives):

* L1 easy: ``jpeg`` (q50-90), ``downscale`` (30-70 % per side), ``flip``, ``crop_light``
  (keep 80-95 % of the area).
* L2 medium: ``crop_medium`` (keep 40-70 %), ``rotate`` (5-15°, either way, corners filled),
  ``jpeg_low`` (q15-30), ``color_jitter``, ``grayscale``, ``blur``, ``pad``, ``aspect``,
  ``text`` and ``emoji`` overlays.
* L3 hard: ``crop_heavy`` (keep 15-30 %), ``paste_into`` (scaled into another photo),
  ``combined`` (three L1/L2 edits chained), ``pixelize``, ``rotate90``, ``perspective``,
  ``blend`` (cross-fade with another photo).

Other photos used by ``paste_into`` and ``blend`` come from ``ctx.backgrounds``: photos that are
not in the reference set, so an edited query never contains a second reference.
"""

from __future__ import annotations

import io
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

__all__ = ["EDITS", "LEVELS", "Assets", "EditContext", "apply_edit", "assets", "encode_jpeg"]

logger = logging.getLogger(__name__)

Params = dict[str, Any]
Edit = Callable[[Image.Image, random.Random, "EditContext"], tuple[Image.Image, Params]]

_WORD_TEXT = (
    "summer sale holiday best friends weekend vibes no filter throwback goals mood love this look at "
    "that wow amazing limited offer today only follow me share repost original photo breaking news "
    "caption meme lol omg sunday trip family team win new"
)
_WORDS = _WORD_TEXT.split(" ")  # the order is part of the seeded output
_FONT_NAMES = (
    "Montserrat-Bold.ttf",
    "OpenSans-Regular.ttf",
    "Raleway-Black.ttf",
    "Ubuntu-B.ttf",
    "Impact.ttf",
    "Pacifico.ttf",
    "Lobster_1.3.ttf",
    "IBMPlexMono-Regular.ttf",
    "PlayfairDisplay-Bold.ttf",
    "Chunkfive.ttf",
)
_DEJAVU = Path("/usr/share/fonts/truetype/dejavu")


@dataclass(frozen=True)
class Assets:
    """Fonts and emoji images for overlays; ``source`` names where they came from."""

    source: str
    fonts: tuple[Path, ...]
    emoji: tuple[Path, ...]


@cache
def assets() -> Assets:
    """AugLy's bundled fonts and Twemoji PNGs when ``augly`` is installed (``pip install augly``).

    Fallback: DejaVu fonts from Debian (or Pillow's built-in font) and drawn stickers instead of
    emoji; the benchmark records which set it used, since overlays then differ.
    """
    try:
        import augly

        root = Path(augly.__file__).parent / "assets"
        fonts = tuple(root / "fonts" / name for name in _FONT_NAMES if (root / "fonts" / name).exists())
        emoji = tuple(sorted((root / "twemojis").rglob("*.png")))
        if fonts and emoji:
            return Assets("augly", fonts, emoji)
    except ImportError:
        pass
    fonts = tuple(sorted(_DEJAVU.glob("DejaVuSans*.ttf"))) if _DEJAVU.exists() else ()
    logger.info(
        "augly not installed: text uses %s, emoji are drawn stickers", "DejaVu" if fonts else "Pillow"
    )
    return Assets("dejavu" if fonts else "pillow", fonts, ())


@dataclass
class EditContext:
    """What edits may draw on besides the image: other photos and overlay assets."""

    backgrounds: Sequence[Image.Image] = ()
    assets: Assets = field(default_factory=assets)

    def background(self, rng: random.Random) -> tuple[int, Image.Image]:
        if not self.backgrounds:
            # a plain textured canvas when no other photo is available
            noise = np.random.default_rng(rng.randrange(2**32)).integers(0, 256, (64, 64, 3), dtype=np.uint8)
            return -1, Image.fromarray(noise).resize((512, 384), Image.Resampling.BICUBIC)
        index = rng.randrange(len(self.backgrounds))
        return index, self.backgrounds[index]


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=int(quality))
    return buffer.getvalue()


def _random_crop(image: Image.Image, rng: random.Random, lo: float, hi: float) -> tuple[Image.Image, Params]:
    """Keep a random window of ``lo..hi`` of the area, aspect ratio within 3:4..4:3 of the original."""
    w, h = image.size
    area = rng.uniform(lo, hi)
    log_ratio = rng.uniform(math.log(3 / 4), math.log(4 / 3))
    cw = min(w, max(8, round(w * math.sqrt(area * math.exp(log_ratio)))))
    ch = min(h, max(8, round(area * w * h / cw)))
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    kept = cw * ch / (w * h)
    return image.crop((left, top, left + cw, top + ch)), {"box": [left, top, cw, ch], "kept": round(kept, 3)}


# --- L1 ------------------------------------------------------------------------------------------


def jpeg(image: Image.Image, rng: random.Random, ctx: EditContext) -> tuple[Image.Image, Params]:
    quality = rng.randint(50, 90)
    return image, {"quality": quality}  # the builder encodes at this quality


def downscale(image: Image.Image, rng: random.Random, ctx: EditContext) -> tuple[Image.Image, Params]:
    scale = rng.uniform(0.3, 0.7)
    w, h = image.size
    size = (max(32, round(w * scale)), max(32, round(h * scale)))
    return image.resize(size, Image.Resampling.BILINEAR), {"scale": round(scale, 3)}


def flip(image: Image.Image, rng: random.Random, ctx: EditContext) -> tuple[Image.Image, Params]:
    return ImageOps.mirror(image), {}


def crop_light(image: Image.Image, rng: random.Random, ctx: EditContext) -> tuple[Image.Image, Params]:
    return _random_crop(image, rng, 0.80, 0.95)


# --- L2 ------------------------------------------------------------------------------------------


def crop_medium(image: Image.Image, rng: random.Random, ctx: EditContext) -> tuple[Image.Image, Params]:
    return _random_crop(image, rng, 0.40, 0.70)


def rotate(image: Image.Image, rng: random.Random, ctx: EditContext) -> tuple[Image.Image, Params]:
    angle = rng.uniform(5, 15) * rng.choice((-1, 1))
    fill = rng.choice(((0, 0, 0), (255, 255, 255)))
    out = image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=fill)
    return out, {"angle": round(angle, 2), "fill": list(fill)}


def jpeg_low(image: Image.Image, rng: random.Random, ctx: EditContext) -> tuple[Image.Image, Params]:
    return image, {"quality": rng.randint(15, 30)}


def color_jitter(image: Image.Image, rng: random.Random, ctx: EditContext) -> tuple[Image.Image, Params]:
    b, c, s = rng.uniform(0.6, 1.4), rng.uniform(0.6, 1.4), rng.uniform(0.4, 1.6)
    hue = rng.uniform(-0.06, 0.06)
    out = ImageEnhance.Brightness(image).enhance(b)
    out = ImageEnhance.Contrast(out).enhance(c)
    out = ImageEnhance.Color(out).enhance(s)
    hsv = np.asarray(out.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + round(hue * 255)) % 256
    out = Image.fromarray(hsv, "HSV").convert("RGB")
    return out, {
        "brightness": round(b, 3),
        "contrast": round(c, 3),
        "saturation": round(s, 3),
        "hue": round(hue, 3),
    }


def grayscale(image: Image.Image, rng: random.Random, ctx: EditContext) -> tuple[Image.Image, Params]:
    return ImageOps.grayscale(image).convert("RGB"), {}


def blur(image: Image.Image, rng: random.Random, ctx: EditContext) -> tuple[Image.Image, Params]:
    radius = rng.uniform(1.0, 2.5) * min(image.size) / 256
    return image.filter(ImageFilter.GaussianBlur(radius)), {"radius": round(radius, 2)}


def pad(image: Image.Image, rng: random.Random, ctx: EditContext) -> tuple[Image.Image, Params]:
    w, h = image.size
    sides = [round(rng.uniform(0.05, 0.3) * (w if i % 2 == 0 else h)) for i in range(4)]
    colour = tuple(rng.randrange(256) for _ in range(3))
    out = ImageOps.expand(image, border=tuple(sides), fill=colour)
    return out, {"border": sides, "colour": list(colour)}


def aspect(image: Image.Image, rng: random.Random, ctx: EditContext) -> tuple[Image.Image, Params]:
    factor = rng.choice((rng.uniform(0.55, 0.8), rng.uniform(1.25, 1.8)))
    w, h = image.size
    return image.resize((max(16, round(w * factor)), h), Image.Resampling.BICUBIC), {
        "x_scale": round(factor, 3)
    }


def _font(ctx: EditContext, rng: random.Random, size: int) -> tuple[Any, str]:
    if ctx.assets.fonts:
        path = rng.choice(ctx.assets.fonts)
        return ImageFont.truetype(str(path), size), path.name
    return ImageFont.load_default(size=size), "pillow-default"


def text(image: Image.Image, rng: random.Random, ctx: EditContext) -> tuple[Image.Image, Params]:
    out = image.copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    lines = []
    for _ in range(rng.randint(1, 3)):
        size = max(8, round(h * rng.uniform(0.06, 0.14)))
        font, font_name = _font(ctx, rng, size)
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))
        x, y = rng.randint(0, max(0, w // 2)), rng.randint(0, max(0, h - size))
        colour = tuple(rng.randrange(256) for _ in range(3))
        stroke = rng.choice((0, max(1, size // 12)))
        draw.text((x, y), words, font=font, fill=colour, stroke_width=stroke, stroke_fill=(0, 0, 0))
        lines.append({"text": words, "font": font_name, "size": size, "xy": [x, y]})
    return out, {"lines": lines}


def _sticker(size: int, rng: random.Random) -> Image.Image:
    """A drawn round sticker (used when no emoji images are available)."""
    sticker = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(sticker)
    colour = (*(rng.randrange(256) for _ in range(3)), 255)
    draw.ellipse((0, 0, size - 1, size - 1), fill=colour, outline=(0, 0, 0, 255), width=max(1, size // 20))
    eye = size // 8
    for cx in (size // 3, 2 * size // 3):
        draw.ellipse((cx - eye // 2, size // 3, cx + eye // 2, size // 3 + eye), fill=(0, 0, 0, 255))
    draw.arc(
        (size // 4, size // 3, 3 * size // 4, 3 * size // 4),
        20,
        160,
        fill=(0, 0, 0, 255),
        width=max(1, size // 16),
    )
    return sticker


def emoji(image: Image.Image, rng: random.Random, ctx: EditContext) -> tuple[Image.Image, Params]:
    out = image.copy().convert("RGBA")
    w, h = out.size
    placed = []
    for _ in range(rng.randint(1, 3)):
        size = max(8, round(min(w, h) * rng.uniform(0.15, 0.3)))
        if ctx.assets.emoji:
            path = rng.choice(ctx.assets.emoji)
            with Image.open(path) as loaded:
                sticker = loaded.convert("RGBA").resize((size, size), Image.Resampling.LANCZOS)
            name = f"{path.parent.name}/{path.name}"
        else:
            sticker, name = _sticker(size, rng), "drawn-sticker"
        x, y = rng.randint(0, max(0, w - size)), rng.randint(0, max(0, h - size))
        out.alpha_composite(sticker, (x, y))
        placed.append({"emoji": name, "size": size, "xy": [x, y]})
    return out.convert("RGB"), {"emoji": placed}


# --- L3 ------------------------------------------------------------------------------------------


def crop_heavy(image: Image.Image, rng: random.Random, ctx: EditContext) -> tuple[Image.Image, Params]:
    return _random_crop(image, rng, 0.15, 0.30)


def paste_into(image: Image.Image, rng: random.Random, ctx: EditContext) -> tuple[Image.Image, Params]:
    index, background = ctx.background(rng)
    canvas = background.convert("RGB").copy()
    bw, bh = canvas.size
    scale = rng.uniform(0.35, 0.65)
    w, h = image.size
    ratio = min(bw * scale / w, bh * scale / h)
    size = (max(16, round(w * ratio)), max(16, round(h * ratio)))
    x, y = rng.randint(0, bw - size[0]), rng.randint(0, bh - size[1])
    canvas.paste(image.resize(size, Image.Resampling.BICUBIC), (x, y))
    return canvas, {"background": index, "scale": round(scale, 3), "xy": [x, y]}


def pixelize(image: Image.Image, rng: random.Random, ctx: EditContext) -> tuple[Image.Image, Params]:
    cells = rng.randint(20, 40)  # cells across the longer side
    w, h = image.size
    ratio = cells / max(w, h)
    small = image.resize((max(2, round(w * ratio)), max(2, round(h * ratio))), Image.Resampling.BOX)
    return small.resize((w, h), Image.Resampling.NEAREST), {"cells": cells}


def rotate90(image: Image.Image, rng: random.Random, ctx: EditContext) -> tuple[Image.Image, Params]:
    turns = rng.choice((1, 2, 3))
    transpose = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_270}
    return image.transpose(transpose[turns]), {"degrees": 90 * turns}


def _perspective_coeffs(
    src: Sequence[tuple[float, float]], dst: Sequence[tuple[float, float]]
) -> list[float]:
    """Coefficients for ``Image.transform(PERSPECTIVE)``, mapping output ``dst`` to input ``src``."""
    rows = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    a = np.asarray(rows, dtype=np.float64)
    b = np.asarray([c for point in src for c in point], dtype=np.float64)
    return np.linalg.solve(a, b).tolist()


def perspective(image: Image.Image, rng: random.Random, ctx: EditContext) -> tuple[Image.Image, Params]:
    w, h = image.size
    amount = rng.uniform(0.1, 0.25)
    corners = [(0, 0), (w, 0), (w, h), (0, h)]
    moved = [
        (
            x + rng.uniform(0, amount) * w * (1 if x == 0 else -1),
            y + rng.uniform(0, amount) * h * (1 if y == 0 else -1),
        )
        for x, y in corners
    ]
    coeffs = _perspective_coeffs(corners, moved)
    fill = rng.choice(((0, 0, 0), (255, 255, 255)))
    out = image.transform(
        (w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC, fillcolor=fill
    )
    return out, {"amount": round(amount, 3)}


def blend(image: Image.Image, rng: random.Random, ctx: EditContext) -> tuple[Image.Image, Params]:
    index, background = ctx.background(rng)
    alpha = rng.uniform(0.5, 0.7)  # weight of the original
    other = background.convert("RGB").resize(image.size, Image.Resampling.BICUBIC)
    return Image.blend(other, image, alpha), {"background": index, "alpha": round(alpha, 3)}


def combined(image: Image.Image, rng: random.Random, ctx: EditContext) -> tuple[Image.Image, Params]:
    pool = [name for name in LEVELS["L1"] + LEVELS["L2"] if name not in ("jpeg", "jpeg_low")]
    names = rng.sample(pool, 3)
    steps = []
    out = image
    for name in names:
        out, params = EDITS[name](out, rng, ctx)
        steps.append({"edit": name, **params})
    return out, {"steps": steps, "quality": rng.randint(30, 70)}


EDITS: dict[str, Edit] = {
    "jpeg": jpeg,
    "downscale": downscale,
    "flip": flip,
    "crop_light": crop_light,
    "crop_medium": crop_medium,
    "rotate": rotate,
    "jpeg_low": jpeg_low,
    "color_jitter": color_jitter,
    "grayscale": grayscale,
    "blur": blur,
    "pad": pad,
    "aspect": aspect,
    "text": text,
    "emoji": emoji,
    "crop_heavy": crop_heavy,
    "paste_into": paste_into,
    "combined": combined,
    "pixelize": pixelize,
    "rotate90": rotate90,
    "perspective": perspective,
    "blend": blend,
}
LEVELS: dict[str, list[str]] = {
    "L1": ["jpeg", "downscale", "flip", "crop_light"],
    "L2": [
        "crop_medium",
        "rotate",
        "jpeg_low",
        "color_jitter",
        "grayscale",
        "blur",
        "pad",
        "aspect",
        "text",
        "emoji",
    ],
    "L3": ["crop_heavy", "paste_into", "combined", "pixelize", "rotate90", "perspective", "blend"],
}
DEFAULT_QUALITY = 90  # JPEG quality of a query whose edit does not choose one


def apply_edit(name: str, image: Image.Image, rng: random.Random, ctx: EditContext) -> tuple[bytes, Params]:
    """Run edit ``name`` and encode the result as JPEG (at the edit's quality, else 90)."""
    out, params = EDITS[name](image.convert("RGB"), rng, ctx)
    quality = int(params.get("quality", DEFAULT_QUALITY))
    return encode_jpeg(out, quality), params

"""The benchmarks' images: real photos (scikit-image, scikit-learn samples) with seeded edits.

Pillow, scikit-image and scikit-learn only (no Kafka, no torch), so the GPU script can use it on
a bare machine. Nothing is downloaded.
"""

from __future__ import annotations

import io
import random

from PIL import Image, ImageEnhance, ImageOps


def photos() -> list[Image.Image]:
    from skimage import data
    from sklearn.datasets import load_sample_images

    out = [
        Image.fromarray(getattr(data, n)()).convert("RGB")
        for n in ("astronaut", "chelsea", "coffee", "rocket")
    ]
    left, right, _ = data.stereo_motorcycle()
    out += [Image.fromarray(left), Image.fromarray(right)]
    out += [Image.fromarray(a) for a in load_sample_images().images]
    return out


def make_images(count: int, seed: int = 0) -> list[bytes]:
    """Distinct 640-px JPEGs (random crops, colour, rotation of real photos); every 5th is a copy."""
    rng = random.Random(seed)
    base = photos()
    images: list[bytes] = []
    for i in range(count):
        if i % 5 == 4 and images:
            src = Image.open(io.BytesIO(images[rng.randrange(len(images))])).convert("RGB")
            img = src.resize((src.width * 3 // 4, src.height * 3 // 4))
        else:
            img = base[rng.randrange(len(base))]
            w, h = img.size
            cw, ch = int(w * rng.uniform(0.35, 0.6)), int(h * rng.uniform(0.35, 0.6))
            x, y = rng.randrange(w - cw), rng.randrange(h - ch)
            img = img.crop((x, y, x + cw, y + ch)).rotate(rng.uniform(-20, 20), expand=False)
            img = ImageEnhance.Color(img).enhance(rng.uniform(0.3, 1.7))
            if rng.random() < 0.5:
                img = ImageOps.mirror(img)
        scale = 640 / max(img.size)
        img = img.resize((max(8, round(img.width * scale)), max(8, round(img.height * scale))))
        buffer = io.BytesIO()
        img.save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images

"""``dupstream demo``: real photos and edited copies through a real worker and broker."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from streams.client import ImageFile, consume_json, produce_images
from streams.spawn import WorkerNotReady, free_port, wait_ready, worker_command

__all__ = ["make_demo_images", "run_demo"]


def _sample_photos() -> dict[str, Image.Image]:
    try:
        from skimage import data
    except ImportError as exc:  # pragma: no cover - scikit-image is installed by `make setup`
        raise SystemExit(
            "the demo needs scikit-image for its sample photos: pip install scikit-image"
        ) from exc
    photos = {
        name: Image.fromarray(getattr(data, name)()).convert("RGB")
        for name in ("astronaut", "chelsea", "coffee", "rocket")
    }
    photos["motorcycle"] = Image.fromarray(data.stereo_motorcycle()[0]).convert("RGB")
    return photos


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def make_demo_images(folder: Path) -> list[ImageFile]:
    """Originals first, then edited copies (recompressed, resized, cropped, flipped)."""
    folder.mkdir(parents=True, exist_ok=True)
    originals, copies = [], []
    for name, photo in _sample_photos().items():
        path = folder / f"{name}.jpg"
        path.write_bytes(_jpeg(photo, 95))
        originals.append(ImageFile(f"{name}", path))
        w, h = photo.size
        edits = {
            "recompressed": _jpeg(photo, 35),
            "half-size": _jpeg(photo.resize((w // 2, h // 2)), 90),
            "cropped": _jpeg(photo.crop((w // 20, h // 20, w - w // 20, h - h // 20)), 90),
            "mirrored": _jpeg(ImageOps.mirror(photo), 90),
        }
        for edit, payload in edits.items():
            copy_path = folder / f"{name}--{edit}.jpg"
            copy_path.write_bytes(payload)
            copies.append(ImageFile(f"{name}--{edit}", copy_path))
    return originals + copies


def run_demo(*, broker: str, model: str, workdir: Path) -> int:
    run = uuid.uuid4().hex[:8]
    workdir = workdir.resolve()
    images = make_demo_images(workdir / "images")
    topics = {
        "input": f"demo-{run}-images",
        "decisions": f"demo-{run}-decisions",
        "dead": f"demo-{run}-dead-letter",
    }
    log_path = workdir / f"worker-{run}.log"
    web_port = free_port()
    command = worker_command(
        broker=broker,
        index=str(workdir / f"index-{run}.db"),
        model=model,
        input_topic=topics["input"],
        decisions_topic=topics["decisions"],
        dead_letter_topic=topics["dead"],
        group=f"dupstream-demo-{run}",
        web_port=web_port,
        extra=["--allow-root", str(workdir / "images")],
    )
    print(f"worker: {' '.join(command[1:])}\nworker log: {log_path}", file=sys.stderr)
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})  # noqa: S603 - our own CLI
    try:
        try:
            wait_ready(worker, web_port)
        except WorkerNotReady as exc:
            raise SystemExit(f"{exc}; see {log_path}") from exc
        started = time.monotonic()
        asyncio.run(produce_images(broker, topics["input"], images[:5], inline=False))
        asyncio.run(_wait_for(broker, topics, 5, worker))
        asyncio.run(produce_images(broker, topics["input"], images[5:], inline=False))
        decided = asyncio.run(_wait_for(broker, topics, len(images), worker))
        elapsed = time.monotonic() - started
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    from streams.cli import format_decision

    print(f"\n{len(decided)} decisions in {elapsed:.1f}s (model {model}):")
    for value in decided:
        print("  " + format_decision(value))
    expected_dupes = len(images) - 5
    got = sum(1 for d in decided if d.get("verdict") == "duplicate")
    print(
        f"\n{got}/{expected_dupes} edited copies flagged as duplicates; "
        f"{sum(1 for d in decided if d.get('verdict') == 'unique')}/5 originals unique"
    )
    return 0 if len(decided) == len(images) else 1


async def _wait_for(
    broker: str, topics: dict[str, str], count: int, worker: subprocess.Popen[bytes], timeout_s: float = 300
) -> list[dict[str, Any]]:
    decided: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while len(decided) < count and time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"worker exited with code {worker.returncode}; see its log")
        async for _, value in consume_json(broker, [topics["decisions"], topics["dead"]], idle_timeout_s=2):
            decided[value.get("id") or str(len(decided))] = value
    return sorted(decided.values(), key=lambda v: (v.get("timestamp", 0), v.get("id", "")))

"""Small aiokafka helpers behind ``dupstream produce`` and ``dupstream tail``."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

__all__ = ["IMAGE_SUFFIXES", "ImageFile", "consume_json", "iter_image_files", "produce_images"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


@dataclass(frozen=True)
class ImageFile:
    id: str
    path: Path


def iter_image_files(paths: Iterable[Path]) -> list[ImageFile]:
    """Files as given, and image files under directories (sorted by name); ids are the paths."""
    files: list[ImageFile] = []
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES:
                    files.append(ImageFile(str(child), child))
        else:
            files.append(ImageFile(str(path), path))
    return files


async def produce_images(
    bootstrap: str,
    topic: str,
    files: list[ImageFile],
    *,
    inline: bool = True,
    tenant: str | None = None,
    progress: Any = None,
) -> int:
    """Send one event per file (``data`` inline, or a ``file://`` uri); returns the count sent."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_request_size=16 * 1024 * 1024, enable_idempotence=True
    )
    await producer.start()
    try:
        futures = []
        for image in files:
            event: dict[str, Any] = {"id": image.id, "timestamp": int(time.time() * 1000)}
            if tenant:
                event["tenant"] = tenant
            if inline:
                event["data"] = base64.b64encode(image.path.read_bytes()).decode("ascii")
            else:
                event["uri"] = image.path.resolve().as_uri()
            futures.append(await producer.send(topic, json.dumps(event).encode(), key=image.id.encode()))
            if progress is not None:
                progress.update(1)
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


async def consume_json(
    bootstrap: str,
    topics: list[str],
    *,
    from_beginning: bool = True,
    idle_timeout_s: float | None = None,
    group: str | None = None,
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Yield ``(topic, value)`` for JSON messages; stops after ``idle_timeout_s`` without one."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=group is not None,
    )
    await consumer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=int((idle_timeout_s or 3600) * 1000))
            if not batches:
                if idle_timeout_s is not None:
                    return
                continue
            for records in batches.values():
                for record in records:
                    if record.value is None:
                        continue
                    try:
                        yield record.topic, json.loads(record.value)
                    except json.JSONDecodeError:
                        continue
    finally:
        await consumer.stop()

"""``dupstream scan``: the service's decisions over local files, without Kafka."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streams.client import iter_image_files
from streams.events import InboundMessage, Source
from streams.settings import WorkerSettings
from streams.wiring import build_pipeline

__all__ = ["duplicate_groups", "scan_paths"]


def scan_paths(
    paths: Sequence[Path],
    *,
    model: str = "sscd-mini",
    index: str | None = None,
    device: str = "auto",
    batch_size: int = 32,
    duplicate_threshold: float | None = None,
    similar_threshold: float | None = None,
) -> list[dict[str, Any]]:
    """Decide every image under ``paths`` in name order; returns decisions and dead letters."""
    files = iter_image_files(paths)
    with tempfile.TemporaryDirectory(prefix="dupstream-scan-") as tmp:
        settings = WorkerSettings(
            index=index or str(Path(tmp) / "scan.db"),
            model=model,
            device=device,
            duplicate_threshold=duplicate_threshold,
            similar_threshold=similar_threshold,
        )
        pipeline = build_pipeline(settings)
        try:
            return asyncio.run(_run(pipeline, files, batch_size))
        finally:
            pipeline.close()
            pipeline.store.close()


async def _run(pipeline: Any, files: list[Any], batch_size: int) -> list[dict[str, Any]]:
    decisions: list[dict[str, Any]] = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        messages = [
            InboundMessage(
                key=f.id.encode(),
                value=f.path.read_bytes(),
                source=Source("scan", 0, start + i),
                timestamp_ms=start + i,
            )
            for i, f in enumerate(chunk)
        ]
        for out in await pipeline.process(messages):
            decisions.append(out.value)
    return decisions


def duplicate_groups(decisions: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """canonical id -> ids decided as its duplicates (in decision order)."""
    groups: dict[str, list[str]] = {}
    for decision in decisions:
        if decision.get("verdict") == "duplicate":
            groups.setdefault(decision["canonical_id"], []).append(decision["id"])
    return groups

"""``dupstream embed``: images to an .npz of ids and L2-normalised vectors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

import encoders
from encoders.decode import decode_image
from streams.client import iter_image_files

__all__ = ["embed_files"]

logger = logging.getLogger(__name__)


def embed_files(
    paths: Sequence[Path], *, out: Path, model: str, device: str = "auto", batch_size: int = 32
) -> tuple[int, int]:
    """Encode every readable image; returns (written, skipped). Unreadable files are logged."""
    encoder = encoders.create(model, device=device)
    files = iter_image_files(paths)
    ids: list[str] = []
    chunks: list[np.ndarray] = []
    skipped = 0

    def load(path: Path) -> np.ndarray | None:
        try:
            return encoder.prepare(decode_image(path.read_bytes(), draft_size=encoder.draft_size))
        except (encoders.DecodeError, OSError) as exc:
            logger.warning("skipping %s: %s", path, exc)
            return None

    with (
        ThreadPoolExecutor(max_workers=4) as pool,
        tqdm(total=len(files), unit="img", file=sys.stderr, disable=len(files) < 50) as bar,
    ):
        batches = [files[start : start + batch_size] for start in range(0, len(files), batch_size)]
        pending = [pool.submit(load, f.path) for f in batches[0]] if batches else []
        for k, chunk in enumerate(batches):
            prepared = [future.result() for future in pending]
            if k + 1 < len(batches):  # decode the next batch while the model runs this one
                pending = [pool.submit(load, f.path) for f in batches[k + 1]]
            keep = [(f, p) for f, p in zip(chunk, prepared, strict=True) if p is not None]
            skipped += len(chunk) - len(keep)
            if keep:
                chunks.append(encoder.embed_prepared(np.stack([p for _, p in keep])))
                ids.extend(f.id for f, _ in keep)
            bar.update(len(chunk))
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, encoder.dim), dtype=np.float32)
    with open(out, "wb") as handle:  # a file object: np.savez would append .npz to a bare path
        np.savez(
            handle,
            ids=np.array(ids, dtype=str),
            vectors=vectors.astype(np.float32),
            model=np.array(encoder.info.model_id),
        )
    return len(ids), skipped

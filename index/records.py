"""The values that cross the index package boundary: what goes in, what comes out."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["IndexRecord", "Match"]


@dataclass(frozen=True, slots=True)
class IndexRecord:
    """One image in the index.

    ``(tenant, image_id)`` identifies it; upserting the same pair again replaces it.
    ``ts`` is the event time in milliseconds: with ``image_id`` it orders records
    (``(ts, image_id)``), which is what "earlier" means everywhere in dupstream.
    ``content_hash``/``pixel_hash`` (hex sha256, or ``""`` when unknown) find exact copies without
    the model; ``canonical_id`` is the original this image was judged a copy of (``""`` if none).

    ``vector`` is compared by identity, not value (``==`` on records ignores it), so records
    stay hashable; it is stored as a read-only float32 array.
    """

    tenant: str
    image_id: str
    ts: int
    vector: np.ndarray = field(compare=False, repr=False)
    content_hash: str = ""
    pixel_hash: str = ""
    canonical_id: str = ""

    def __post_init__(self) -> None:
        vector = np.array(self.vector, dtype=np.float32, copy=True).reshape(-1)
        vector.setflags(write=False)
        object.__setattr__(self, "vector", vector)
        for name in ("content_hash", "pixel_hash", "canonical_id"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, "")

    @property
    def order_key(self) -> tuple[int, str]:
        """``(ts, image_id)``: the order in which images count as "earlier"."""
        return (self.ts, self.image_id)


@dataclass(frozen=True, slots=True)
class Match:
    """An indexed image found by :meth:`MilvusStore.search` or :meth:`MilvusStore.find_by_hash`.

    ``score`` is the similarity in the collection's metric (inner product of L2-normalised
    vectors = cosine, higher is more similar); exact hash matches report ``1.0``.
    """

    tenant: str
    image_id: str
    ts: int
    score: float
    canonical_id: str = ""
    content_hash: str = ""
    pixel_hash: str = ""

    @property
    def order_key(self) -> tuple[int, str]:
        return (self.ts, self.image_id)

"""Turn similarity scores into verdicts: ``duplicate``, ``similar`` or ``unique``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Candidate", "ThresholdBook", "Thresholds", "Verdict", "canonical_of", "classify", "verdict_of"]

Verdict = Literal["duplicate", "similar", "unique"]


@dataclass(frozen=True)
class Thresholds:
    """Cosine-similarity cut-offs; ``duplicate`` must be >= ``similar``."""

    duplicate: float
    similar: float

    def __post_init__(self) -> None:
        if not -1.0 <= self.similar <= self.duplicate <= 1.0:
            raise ValueError(
                f"thresholds must satisfy -1 <= similar <= duplicate <= 1, got "
                f"similar={self.similar}, duplicate={self.duplicate}"
            )

    def to_dict(self) -> dict[str, float]:
        return {"duplicate": self.duplicate, "similar": self.similar}


@dataclass(frozen=True)
class ThresholdBook:
    """Default thresholds plus per-tenant overrides."""

    default: Thresholds
    per_tenant: Mapping[str, Thresholds] | None = None

    def for_tenant(self, tenant: str) -> Thresholds:
        if self.per_tenant and tenant in self.per_tenant:
            return self.per_tenant[tenant]
        return self.default


@dataclass(frozen=True)
class Candidate:
    """An earlier image that scored against the one being decided."""

    id: str
    score: float
    canonical_id: str
    order_key: tuple[int, str]
    exact: bool = False


def verdict_of(score: float, thresholds: Thresholds) -> Verdict:
    if score >= thresholds.duplicate:
        return "duplicate"
    if score >= thresholds.similar:
        return "similar"
    return "unique"


def classify(
    candidates: Sequence[Candidate], thresholds: Thresholds, *, top_k: int
) -> tuple[Verdict, list[Candidate]]:
    """Verdict of the best candidate, and the top-k candidates above the similar threshold.

    Ties on score go to the earlier image, so the outcome does not depend on arrival order.
    """
    ranked = sorted(candidates, key=lambda c: (-round(c.score, 6), c.order_key))
    kept: list[Candidate] = []
    seen: set[str] = set()
    for candidate in ranked:
        if candidate.id in seen or verdict_of(candidate.score, thresholds) == "unique":
            continue
        seen.add(candidate.id)
        kept.append(candidate)
        if len(kept) == top_k:
            break
    if not kept:
        return "unique", []
    return verdict_of(kept[0].score, thresholds), kept


def canonical_of(image_id: str, verdict: Verdict, matches: Sequence[Candidate]) -> str:
    """Canonical id for a decision: the group of the best duplicate match, else the image itself.

    Stored records carry their group's canonical id (the earliest image of the group), so
    following the best match's canonical id lands on the earliest image without a chain walk.
    """
    if verdict != "duplicate" or not matches:
        return image_id
    return matches[0].canonical_id

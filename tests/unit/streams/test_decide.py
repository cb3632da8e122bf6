"""Verdicts, top-k and canonical ids."""

from __future__ import annotations

import pytest

from streams.decide import Candidate, ThresholdBook, Thresholds, canonical_of, classify

T = Thresholds(duplicate=0.8, similar=0.6)


def cand(image_id: str, score: float, ts: int, canonical: str | None = None) -> Candidate:
    return Candidate(image_id, score, canonical or image_id, (ts, image_id))


def test_tiers() -> None:
    assert classify([cand("a", 0.9, 1)], T, top_k=5)[0] == "duplicate"
    assert classify([cand("a", 0.7, 1)], T, top_k=5)[0] == "similar"
    assert classify([cand("a", 0.5, 1)], T, top_k=5) == ("unique", [])
    assert classify([], T, top_k=5) == ("unique", [])


def test_matches_best_first_ties_go_to_the_earlier_image() -> None:
    verdict, matches = classify([cand("b", 0.85, 5), cand("a", 0.85, 1), cand("c", 0.95, 9)], T, top_k=2)
    assert verdict == "duplicate"
    assert [m.id for m in matches] == ["c", "a"]


def test_canonical_follows_best_duplicate_group() -> None:
    _, matches = classify([cand("copy1", 0.9, 5, canonical="orig")], T, top_k=5)
    assert canonical_of("copy2", "duplicate", matches) == "orig"
    assert canonical_of("x", "similar", matches) == "x"


def test_thresholds_validate_and_tenant_overrides() -> None:
    with pytest.raises(ValueError, match="similar <= duplicate"):
        Thresholds(duplicate=0.5, similar=0.7)
    book = ThresholdBook(default=T, per_tenant={"strict": Thresholds(0.95, 0.9)})
    assert book.for_tenant("strict").duplicate == 0.95
    assert book.for_tenant("other") is T

"""Primary keys: unambiguous, bounded in UTF-8 bytes, reversible."""

from __future__ import annotations

import itertools

import pytest

from index import IndexRequestError, make_pk
from index.keys import MAX_IMAGE_ID_BYTES, MAX_PK_BYTES, MAX_TENANT_BYTES, check_hash, split_pk


def test_pk_round_trips_through_split() -> None:
    for tenant, image_id in [("t", "a"), ("a:b", "c"), ("3:x", ":y:"), ("画像", "ü\n\"'\\")]:
        assert split_pk(make_pk(tenant, image_id)) == (tenant, image_id)


def test_pk_never_collides_for_different_pairs() -> None:
    alphabet = ["a", ":", "1", "\\"]
    strings = ["".join(p) for n in (1, 2, 3) for p in itertools.product(alphabet, repeat=n)]
    seen: dict[str, tuple[str, str]] = {}
    for tenant, image_id in itertools.product(strings, strings):
        pk = make_pk(tenant, image_id)
        assert seen.setdefault(pk, (tenant, image_id)) == (tenant, image_id)


def test_longest_allowed_pair_fits_the_pk_field() -> None:
    pk = make_pk("é" * (MAX_TENANT_BYTES // 2), "x" * MAX_IMAGE_ID_BYTES)
    assert len(pk.encode()) <= MAX_PK_BYTES


@pytest.mark.parametrize(
    ("tenant", "image_id"),
    [
        ("", "a"),
        ("t", ""),
        ("t" * (MAX_TENANT_BYTES + 1), "a"),
        ("é" * (MAX_TENANT_BYTES // 2 + 1), "a"),  # limit counts bytes, not characters
        ("t", "x" * (MAX_IMAGE_ID_BYTES + 1)),
        ("t", "\ud800"),  # lone surrogate: not storable text
        ("t", 5),
    ],
    ids=["empty-tenant", "empty-id", "long-tenant", "long-tenant-bytes", "long-id", "surrogate", "not-str"],
)
def test_invalid_ids_are_rejected(tenant: object, image_id: object) -> None:
    with pytest.raises(IndexRequestError) as info:
        make_pk(tenant, image_id)  # type: ignore[arg-type]
    assert info.value.reason == "invalid_argument"
    assert not info.value.retriable


def test_hashes_may_be_empty_but_not_longer_than_sha256_hex() -> None:
    assert check_hash(None, "h") == ""
    assert check_hash("f" * 64, "h") == "f" * 64
    with pytest.raises(IndexRequestError):
        check_hash("f" * 65, "h")


@pytest.mark.parametrize("bad", ["", "x:a", "5:ab:c", "1:ab"])
def test_split_rejects_foreign_keys(bad: str) -> None:
    with pytest.raises(ValueError, match="primary key"):
        split_pk(bad)

"""MilvusStore against real backends: every test runs on milvus-lite and on the Milvus server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from index import (
    IndexRecord,
    IndexSchemaError,
    IndexUnavailableError,
    MilvusStore,
)

pytestmark = pytest.mark.integration

DIM = 16
MODEL = "test-model@1"
HOSTILE = [
    'quote"inside',
    "single'quote",
    "back\\slash",
    'both\\"mixed',
    "trailing\\",
    "new\nline",
    "tab\tand\rcr",
    "nul\x00byte",
    '" or tenant != "',
    "' or 1 == 1 or tenant == '",
    "ünïcødé ✓ 画像",
]


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def near(v: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """A unit vector close to ``v`` (cosine falls as ``scale`` grows)."""
    w = v + scale * np.random.default_rng(seed).normal(size=v.shape).astype(np.float32)
    return (w / np.linalg.norm(w)).astype(np.float32)


def record(tenant: str, image_id: str, ts: int, vector: np.ndarray, **extra: str) -> IndexRecord:
    return IndexRecord(tenant=tenant, image_id=image_id, ts=ts, vector=vector, **extra)


@pytest.fixture
def milvus_client(milvus_uri: str) -> Iterator[object]:
    """The one client a process would share; test collections are dropped through it."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_uri, timeout=30)
    yield client
    client.close()


@pytest.fixture
def store(milvus_client: object, unique_collection: str) -> Iterator[MilvusStore]:
    s = MilvusStore(client=milvus_client, collection=unique_collection, dim=DIM, model_id=MODEL)
    s.ensure_collection()
    yield s
    s.close()
    milvus_client.drop_collection(unique_collection)  # type: ignore[attr-defined]


# ── collection lifecycle ───────────────────────────────────────────────────────────────────


def test_ensure_collection_is_idempotent_and_keeps_data(store: MilvusStore, milvus_client: object) -> None:
    store.upsert([record("t", "a", 1, unit_vectors(1)[0])])
    store.ensure_collection()
    again = MilvusStore(client=milvus_client, collection=store.collection, dim=DIM, model_id=MODEL)
    again.ensure_collection()
    assert again.count() == 1
    assert list(again.get(["a"], tenant="t")) == ["a"]


@pytest.mark.parametrize(
    ("change", "mentioned"),
    [
        ({"dim": DIM * 2}, "dim is 16"),
        ({"metric": "COSINE"}, "metric is IP"),
        ({"model_id": "other@2"}, MODEL),
    ],
    ids=["dim", "metric", "model_id"],
)
def test_ensure_collection_refuses_drift_and_keeps_collection(
    store: MilvusStore, milvus_client: object, change: dict, mentioned: str
) -> None:
    store.upsert([record("t", "a", 1, unit_vectors(1)[0])])
    kwargs = {"dim": DIM, "model_id": MODEL, **change}
    other = MilvusStore(client=milvus_client, collection=store.collection, **kwargs)
    with pytest.raises(IndexSchemaError) as info:
        other.ensure_collection()
    assert info.value.reason == "schema_mismatch"
    assert not info.value.retriable
    assert mentioned in str(info.value)
    assert "another collection" in str(info.value)
    assert store.count() == 1  # nothing was dropped


def test_uri_store_and_injected_client_store_share_the_collection(
    store: MilvusStore, milvus_uri: str
) -> None:
    own = MilvusStore(uri=milvus_uri, collection=store.collection, dim=DIM, model_id=MODEL)
    try:
        own.ensure_collection()
        own.upsert([record("t", "x", 5, unit_vectors(1)[0])])
        assert store.count() == 1
    finally:
        own.close()


def test_calls_before_ensure_collection_raise_collection_missing(
    milvus_client: object, unique_collection: str
) -> None:
    s = MilvusStore(client=milvus_client, collection=unique_collection, dim=DIM, model_id=MODEL)
    with pytest.raises(IndexSchemaError) as info:
        s.count()
    assert info.value.reason == "collection_missing"


# ── writes and reads ───────────────────────────────────────────────────────────────────────


def test_upsert_of_same_id_replaces_the_record(store: MilvusStore) -> None:
    v = unit_vectors(2)
    store.upsert([record("t", "a", 1, v[0], content_hash="h1")])
    store.upsert([record("t", "a", 2, v[1], content_hash="h2", canonical_id="orig")])
    assert store.count() == 1
    got = store.get(["a"], tenant="t")["a"]
    assert (got.ts, got.content_hash, got.canonical_id) == (2, "h2", "orig")
    np.testing.assert_allclose(got.vector, v[1], rtol=1e-6)
    [[top]] = store.search(v[1:2], tenants=["t"], top_k=1)
    assert top.image_id == "a"
    assert top.score == pytest.approx(1.0, abs=1e-4)
    assert store.find_by_hash(["h1"], tenant="t") == {}


def test_repeated_id_in_one_upsert_keeps_the_last(store: MilvusStore) -> None:
    v = unit_vectors(2)
    written = store.upsert([record("t", "a", 1, v[0]), record("t", "a", 9, v[1])])
    assert written == 1
    assert store.get(["a"], tenant="t")["a"].ts == 9


def test_reads_see_writes_immediately(store: MilvusStore) -> None:
    v = unit_vectors(5, seed=3)
    for i in range(5):  # no sleeps, no flushes: each write must be visible to the next read
        store.upsert([record("t", f"img{i}", i, v[i])])
        assert store.count("t") == i + 1
        [[top]] = store.search(v[i : i + 1], tenants=["t"], top_k=1)
        assert top.image_id == f"img{i}"
        assert f"img{i}" in store.get([f"img{i}"], tenant="t")


def test_delete_returns_how_many_existed(store: MilvusStore) -> None:
    v = unit_vectors(3)
    store.upsert([record("t", f"i{k}", k, v[k]) for k in range(3)] + [record("u", "i0", 0, v[0])])
    assert store.delete(["i0", "i1", "missing"], tenant="t") == 2
    assert store.delete(["i0"], tenant="t") == 0
    assert store.count() == 2
    assert store.count("u") == 1  # same image id, other tenant: untouched
    assert store.get(["i0", "i1", "i2"], tenant="t").keys() == {"i2"}
    [[top]] = store.search(v[0:1], tenants=["t"], top_k=1)
    assert top.image_id == "i2"


def test_count_per_tenant_and_in_total(store: MilvusStore) -> None:
    v = unit_vectors(6)
    store.upsert([record("a" if k < 4 else "b", f"i{k}", k, v[k]) for k in range(6)])
    assert (store.count(), store.count("a"), store.count("b"), store.count("nobody")) == (6, 4, 2, 0)


# ── search ─────────────────────────────────────────────────────────────────────────────────


def test_search_ranks_best_first_and_sees_only_earlier_records(store: MilvusStore) -> None:
    base = unit_vectors(1, seed=7)[0]
    # Copies of `base` with falling similarity, at increasing times; "late" comes after the query.
    records = [
        record("t", "orig", 100, base),
        record("t", "close", 200, near(base, 0.05, 1)),
        record("t", "far", 300, near(base, 0.6, 2)),
        record("t", "query", 400, near(base, 0.02, 3)),
        record("t", "late", 500, base),
    ]
    store.upsert(records)
    [matches] = store.search(records[3].vector[None, :], tenants=["t"], before=[(400, "query")], top_k=10)
    assert [m.image_id for m in matches] == ["orig", "close", "far"]
    assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
    assert matches[0].ts == 100 and matches[0].tenant == "t"

    # Same ts: the image id breaks the tie, strictly (an image never matches itself).
    store.upsert([record("t", "b", 400, base), record("t", "c", 400, base)])
    [tied] = store.search(base[None, :], tenants=["t"], before=[(400, "c")], top_k=10)
    ids = {m.image_id for m in tied}
    assert "b" in ids and "c" not in ids and "query" not in ids and "late" not in ids


def test_search_without_before_sees_everything_of_the_tenant(store: MilvusStore) -> None:
    v = unit_vectors(3)
    store.upsert([record("t", f"i{k}", k, v[k]) for k in range(3)])
    [matches] = store.search(v[2:3], tenants=["t"], top_k=10)
    assert matches[0].image_id == "i2"
    assert {m.image_id for m in matches} == {"i0", "i1", "i2"}


def test_search_is_scoped_to_the_tenant(store: MilvusStore) -> None:
    v = unit_vectors(1)[0]
    store.upsert([record("alpha", "x", 1, v), record("beta", "y", 1, v), record("alphabet", "z", 1, v)])
    results = store.search(np.stack([v, v, v]), tenants=["alpha", "beta", "gamma"], top_k=10)
    assert [[m.image_id for m in r] for r in results] == [["x"], ["y"], []]


def test_batched_search_equals_exact_search_per_query(store: MilvusStore) -> None:
    """A replayed batch: its own records are already indexed, and each query has its own bound."""
    rng = np.random.default_rng(11)
    v = unit_vectors(40, seed=5)
    tenants = ["t1" if k % 3 else "t2" for k in range(40)]
    ts = rng.integers(0, 10, size=40)  # many equal timestamps: the image id decides
    store.upsert([record(tenants[k], f"id{k:02d}", int(ts[k]), v[k]) for k in range(40)])

    batch = list(range(8, 40))  # 32 queries: noisy copies of indexed images
    queries = np.stack([near(v[k], 0.3, k) for k in batch])
    bounds = [(int(ts[k]), f"id{k:02d}") for k in batch]
    got = store.search(queries, tenants=[tenants[k] for k in batch], before=bounds, top_k=3)

    for row, k in enumerate(batch):
        visible = [
            j for j in range(40) if tenants[j] == tenants[k] and (int(ts[j]), f"id{j:02d}") < bounds[row]
        ]
        scores = {f"id{j:02d}": float(v[j] @ queries[row]) for j in visible}
        expected = sorted(scores, key=lambda i: (-scores[i], i))[:3]
        assert [m.image_id for m in got[row]] == expected, f"query {k}"
        for m in got[row]:
            assert m.score == pytest.approx(scores[m.image_id], abs=1e-4)


def test_min_score_drops_weak_matches(store: MilvusStore) -> None:
    base = unit_vectors(1, seed=9)[0]
    store.upsert([record("t", "same", 1, base), record("t", "other", 2, near(base, 3.0, 4))])
    [matches] = store.search(base[None, :], tenants=["t"], top_k=10, min_score=0.9)
    assert [m.image_id for m in matches] == ["same"]


def test_empty_batch_and_empty_collection(store: MilvusStore) -> None:
    assert store.search(np.zeros((0, DIM), np.float32), tenants=[], top_k=5) == []
    assert store.search(unit_vectors(2), tenants=["t", "t"], before=[(1, "a"), (2, "b")], top_k=5) == [[], []]
    assert store.upsert([]) == 0
    assert store.delete([], tenant="t") == 0
    assert store.get([], tenant="t") == {}


# ── exact copies ───────────────────────────────────────────────────────────────────────────


def test_find_by_hash_returns_the_earliest_copy(store: MilvusStore) -> None:
    v = unit_vectors(5)
    store.upsert(
        [
            record("t", "third", 30, v[0], content_hash="c" * 64),
            record("t", "first", 10, v[1], content_hash="c" * 64, pixel_hash="p" * 64),
            record("t", "second", 20, v[2], pixel_hash="p" * 64, canonical_id="first"),
            record("t", "plain", 5, v[3]),  # no hashes: "" must never match
            record("other", "zeroth", 1, v[4], content_hash="c" * 64),
        ]
    )
    found = store.find_by_hash(["c" * 64, "p" * 64, "d" * 64, ""], tenant="t")
    assert {h: m.image_id for h, m in found.items()} == {"c" * 64: "first", "p" * 64: "first"}
    assert found["c" * 64].score == 1.0

    later = store.find_by_hash(["p" * 64], tenant="t", before=(20, "second"))
    assert later["p" * 64].image_id == "first"
    none_before = store.find_by_hash(["c" * 64], tenant="t", before=(10, "first"))
    assert none_before == {}
    by_pixel_only = store.find_by_hash(["p" * 64], tenant="t", before=(25, "x"))
    assert by_pixel_only["p" * 64].image_id == "first"


# ── hostile strings ────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("hostile", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_tenant_and_ids_are_data_not_syntax(store: MilvusStore, hostile: str) -> None:
    v = unit_vectors(3, seed=2)
    store.upsert(
        [
            record(hostile, hostile, 1, v[0], content_hash="h" * 64, canonical_id=hostile),
            record(hostile, "plain", 2, v[1]),
            record("victim", hostile, 1, v[0], content_hash="h" * 64),
        ]
    )
    assert store.count(hostile) == 2
    assert store.get([hostile], tenant=hostile)[hostile].canonical_id == hostile
    [matches] = store.search(v[0:1], tenants=[hostile], before=[(2, "plain")], top_k=10)
    assert [(m.tenant, m.image_id) for m in matches] == [(hostile, hostile)]
    [none] = store.search(v[0:1], tenants=[hostile], before=[(1, hostile)], top_k=10)
    assert none == []
    assert store.find_by_hash(["h" * 64], tenant=hostile)["h" * 64].image_id == hostile
    assert store.delete([hostile], tenant=hostile) == 1
    assert store.count(hostile) == 1
    assert store.count("victim") == 1


# ── failures ───────────────────────────────────────────────────────────────────────────────


def test_unreachable_server_is_a_retriable_error() -> None:
    from tests.fixtures.milvus import free_port

    with pytest.raises(IndexUnavailableError) as info:
        MilvusStore(uri=f"http://127.0.0.1:{free_port()}", dim=DIM, model_id=MODEL, timeout=2)
    assert info.value.retriable
    assert info.value.reason == "index_unavailable"


@pytest.mark.slow
def test_milvus_lite_answers_after_idling_past_the_grpc_keepalive(tmp_path: Path) -> None:
    """A worker on a quiet stream leaves its milvus-lite channel idle for minutes.

    pymilvus pings every 10 s and milvus-lite's in-process gRPC server answers an idle channel
    with GOAWAY ``too_many_pings`` within about two minutes (gRPC logs it); the next call must
    reconnect and work (milvus-lite 2.5 lost its daemon after ~60 s idle: milvus-io/milvus-lite#334).
    """
    store = MilvusStore(uri=str(tmp_path / "idle.db"), dim=DIM, model_id=MODEL)
    store.ensure_collection()
    v = unit_vectors(2)
    store.upsert([record("t", "a", 1, v[0])])
    time.sleep(180)
    assert [m.image_id for m in store.search(v[1:], tenants=["t"], top_k=1)[0]] == ["a"]
    store.upsert([record("t", "b", 2, v[1])])
    assert store.count("t") == 2
    store.close()

"""MilvusStore logic with a fake client: validation, batching, drift checks (no Milvus needed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pymilvus.client.types import LoadState
from pymilvus.exceptions import MilvusException

from index import IndexRecord, IndexRequestError, IndexSchemaError, IndexUnavailableError, MilvusStore
from index.store import PROP_MODEL_ID

DIM = 4


class FakeClient:
    """Answers like pymilvus's MilvusClient for an existing, loaded collection."""

    def __init__(self, *, dim: int = DIM, metric: str = "IP", model_id: str = "m@1", version: str = "v2.3.5"):
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.dim, self.metric, self.model_id, self.version = dim, metric, model_id, version
        self.search_answer: Any = None
        self.fail: Exception | None = None

    def _record(self, name: str, **kwargs: Any) -> None:
        self.calls.append((name, kwargs))
        if self.fail is not None:
            raise self.fail

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def get_server_version(self, **kw: Any) -> str:
        return self.version

    def has_collection(self, name: str, **kw: Any) -> bool:
        self._record("has_collection")
        return True

    def describe_collection(self, name: str, **kw: Any) -> dict[str, Any]:
        fields = ["pk", "tenant", "image_id", "ts", "content_hash", "pixel_hash", "canonical_id"]
        return {
            "fields": [{"name": f, "params": {}} for f in fields]
            + [{"name": "vector", "params": {"dim": self.dim}}],
            "properties": {PROP_MODEL_ID: self.model_id},
        }

    def list_indexes(self, name: str, **kw: Any) -> list[str]:
        return ["vector"]

    def describe_index(self, name: str, index_name: str, **kw: Any) -> dict[str, Any]:
        return {"field_name": "vector", "metric_type": self.metric, "index_type": "HNSW"}

    def get_load_state(self, name: str, **kw: Any) -> dict[str, Any]:
        return {"state": LoadState.Loaded}

    def upsert(self, name: str, rows: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
        self._record("upsert", rows=rows)
        return {"upsert_count": len(rows)}

    def flush(self, name: str, **kw: Any) -> None:
        self._record("flush")

    def search(self, name: str, *, data: np.ndarray, filter: str, limit: int, **kw: Any) -> list[list[dict]]:
        self._record("search", n=len(data), filter=filter, limit=limit, params=kw["search_params"])
        if callable(self.search_answer):
            return self.search_answer(len(data), filter, limit)
        return [[] for _ in range(len(data))]


def hit(image_id: str, ts: int, score: float) -> dict[str, Any]:
    entity = {
        "tenant": "t",
        "image_id": image_id,
        "ts": ts,
        "canonical_id": "",
        "content_hash": "",
        "pixel_hash": "",
    }
    return {"id": image_id, "distance": score, "entity": entity}


@pytest.fixture
def fake() -> FakeClient:
    return FakeClient()


@pytest.fixture
def store(fake: FakeClient) -> MilvusStore:
    s = MilvusStore(client=fake, collection="c", dim=DIM, model_id="m@1")
    s.ensure_collection()
    return s


def test_one_call_per_tenant_for_a_batch(store: MilvusStore, fake: FakeClient) -> None:
    vectors = np.eye(DIM, dtype=np.float32)[[0, 1, 2, 3, 0, 1]]
    tenants = ["a", "b", "a", "a", "b", "c"]
    before = [(10 + i, f"id{i}") for i in range(6)]
    results = store.search(vectors, tenants=tenants, before=before, top_k=5)
    assert results == [[] for _ in range(6)]
    searches = [kw for name, kw in fake.calls if name == "search"]
    assert sorted((kw["n"], kw["limit"]) for kw in searches) == [(1, 5), (2, 5), (3, 5)]
    a_call = next(kw for kw in searches if kw["n"] == 3)
    assert a_call["filter"] == 'tenant == "a" and (ts < 13 or (ts == 13 and image_id < "id3"))'
    assert all(kw["params"]["params"]["ef"] >= kw["limit"] for kw in searches)


def test_saturated_group_falls_back_to_exact_per_query_calls(store: MilvusStore, fake: FakeClient) -> None:
    def answer(n: int, expr: str, limit: int) -> list[list[dict]]:
        if n > 1:  # the group call: only records later than most queries' own bounds
            return [[hit(f"late{k}", 100, 0.9 - k / 100) for k in range(limit)] for _ in range(n)]
        return [[hit("early", 1, 0.5)]]

    fake.search_answer = answer
    vectors = np.eye(DIM, dtype=np.float32)[:3]
    results = store.search(vectors, tenants=["t"] * 3, before=[(5, "a"), (6, "b"), (200, "c")], top_k=2)
    assert [[m.image_id for m in r] for r in results] == [["early"], ["early"], ["late0", "late1"]]
    searches = [kw for name, kw in fake.calls if name == "search"]
    assert [(kw["n"], kw["limit"]) for kw in searches] == [(3, 2), (2, 5), (1, 2), (1, 2)]
    assert {kw["filter"] for kw in searches[2:]} == {
        'tenant == "t" and (ts < 5 or (ts == 5 and image_id < "a"))',
        'tenant == "t" and (ts < 6 or (ts == 6 and image_id < "b"))',
    }


def test_replayed_batch_is_answered_by_one_wider_call(store: MilvusStore, fake: FakeClient) -> None:
    """A replay: the batch's own later images are indexed and crowd the first, narrow call."""
    own = [hit(f"own{k}", 10 + k, 0.99 - k / 100) for k in range(3)]  # the batch itself, ts 10..12
    old = [hit("old", 1, 0.5)]

    def answer(n: int, expr: str, limit: int) -> list[list[dict]]:
        return [(own + old)[:limit] for _ in range(n)]

    fake.search_answer = answer
    vectors = np.eye(DIM, dtype=np.float32)[:3]
    before = [(10, "own0"), (11, "own1"), (12, "own2")]
    results = store.search(vectors, tenants=["t"] * 3, before=before, top_k=1)
    assert [[m.image_id for m in r] for r in results] == [["old"], ["own0"], ["own0"]]
    searches = [kw for name, kw in fake.calls if name == "search"]
    assert [(kw["n"], kw["limit"]) for kw in searches] == [(3, 1), (1, 4)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vectors": np.zeros((2, DIM + 1), np.float32)}, "shape"),
        ({"vectors": np.full((1, DIM), np.nan, np.float32), "tenants": ["t"]}, "NaN"),
        ({"tenants": "tt"}, "tenants"),
        ({"tenants": ["t"]}, "tenants"),
        ({"before": [(1, "a")]}, "before"),
        ({"before": [(1, "a"), ("x", "b")]}, "ts"),
        ({"top_k": 0}, "top_k"),
        ({"tenants": ["t", ""]}, "tenant"),
    ],
)
def test_bad_search_arguments_fail_before_any_call(
    store: MilvusStore, fake: FakeClient, kwargs: dict, message: str
) -> None:
    args: dict[str, Any] = {"vectors": np.ones((2, DIM), np.float32), "tenants": ["t", "t"], "top_k": 3}
    args.update(kwargs)
    with pytest.raises(IndexRequestError, match=message):
        store.search(args.pop("vectors"), **args)
    assert "search" not in fake.names()


def test_upsert_validates_every_record_before_writing(store: MilvusStore, fake: FakeClient) -> None:
    good = IndexRecord(tenant="t", image_id="a", ts=1, vector=np.ones(DIM))
    bad = IndexRecord(tenant="t", image_id="b", ts=2, vector=np.ones(DIM + 1))
    with pytest.raises(IndexRequestError, match="dim=4"):
        store.upsert([good, bad])
    assert "upsert" not in fake.names()


def test_upsert_sends_one_row_per_id_last_one_winning(store: MilvusStore, fake: FakeClient) -> None:
    records = [IndexRecord(tenant="t", image_id="a", ts=ts, vector=np.ones(DIM)) for ts in (1, 2, 3)]
    assert store.upsert(records) == 1
    [(_, kw)] = [c for c in fake.calls if c[0] == "upsert"]
    assert [(r["pk"], r["ts"]) for r in kw["rows"]] == [("1:t:a", 3)]


def test_milvus_lite_is_flushed_every_n_rows() -> None:
    fake = FakeClient(version="milvus_lite-3.2.2")
    store = MilvusStore(client=fake, collection="c", dim=DIM, model_id="m@1", lite_flush_rows=5)
    store.ensure_collection()
    for i in range(4):
        store.upsert(
            [IndexRecord(tenant="t", image_id=f"{i}-{k}", ts=i, vector=np.ones(DIM)) for k in range(2)]
        )
    assert fake.names().count("flush") == 1


@pytest.mark.parametrize(
    ("client_kwargs", "expected"),
    [
        ({"dim": 8}, "dim is 8, expected 4"),
        ({"metric": "L2"}, "metric is L2"),
        ({"model_id": "x@9"}, "'x@9'"),
    ],
)
def test_drift_is_refused_with_both_values(client_kwargs: dict, expected: str) -> None:
    store = MilvusStore(client=FakeClient(**client_kwargs), collection="c", dim=DIM, model_id="m@1")
    with pytest.raises(IndexSchemaError, match=expected) as info:
        store.ensure_collection()
    assert info.value.reason == "schema_mismatch"


def test_backend_outage_is_retriable(store: MilvusStore, fake: FakeClient) -> None:
    fake.fail = MilvusException(code=2, message="Fail connecting to server")
    with pytest.raises(IndexUnavailableError) as info:
        store.upsert([IndexRecord(tenant="t", image_id="a", ts=1, vector=np.ones(DIM))])
    assert info.value.retriable
    assert isinstance(info.value.__cause__, MilvusException)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"uri": "./no-suffix"},
        {"uri": "x.db", "client": object()},
        {"uri": "x.db", "metric": "L2"},
        {"uri": "x.db", "index_type": "DISKANN"},
        {"uri": "x.db", "consistency": "Sometimes"},
        {"uri": "x.db", "dim": 0},
        {"uri": "x.db", "model_id": ""},
    ],
)
def test_bad_configuration_is_refused_without_connecting(kwargs: dict) -> None:
    args = {"dim": DIM, "model_id": "m@1", **kwargs}
    with pytest.raises(IndexRequestError):
        MilvusStore(**args)


def test_records_are_hashable_and_their_vectors_read_only() -> None:
    r = IndexRecord(tenant="t", image_id="a", ts=1, vector=[1, 2, 3, 4], content_hash=None)  # type: ignore[arg-type]
    assert r.vector.dtype == np.float32 and not r.vector.flags.writeable
    assert r.content_hash == ""
    assert hash(r) == hash(IndexRecord(tenant="t", image_id="a", ts=1, vector=np.zeros(4)))
    assert r.order_key == (1, "a")

"""The Milvus-backed image index: one collection, one client, milvus-lite or a server by URI.

    >>> store = MilvusStore(uri="./dupstream.db", dim=512, model_id="sscd-mini@1")
    >>> store.ensure_collection()
    >>> store.upsert([IndexRecord(tenant="t", image_id="a", ts=1, vector=v)])
    >>> store.search(vs, tenants=["t"] * len(vs), before=[(2, "b")] * len(vs), top_k=10)

The store is synchronous and thread-safe; async callers run it in an executor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from index.errors import IndexRequestError, IndexSchemaError, IndexStoreError, IndexUnavailableError
from index.expr import before_expr, in_expr, tenant_expr
from index.keys import (
    MAX_HASH_BYTES,
    MAX_IMAGE_ID_BYTES,
    MAX_PK_BYTES,
    MAX_TENANT_BYTES,
    check_hash,
    check_id,
    make_pk,
)
from index.plan import MAX_LIMIT, SearchGroup, plan_groups, select
from index.records import IndexRecord, Match

__all__ = ["MilvusStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

PROP_MODEL_ID = "dupstream.model_id"
PROP_SCHEMA_VERSION = "dupstream.schema_version"
SCHEMA_VERSION = "1"

METRICS = ("IP", "COSINE")  # both "higher is more similar"; L2 would invert every comparison
INDEX_TYPES = ("auto", "FLAT", "HNSW", "IVF_FLAT")
CONSISTENCY_LEVELS = ("Strong", "Session", "Bounded", "Eventually")
DEFAULT_INDEX_PARAMS: dict[str, dict[str, Any]] = {
    "FLAT": {},
    "HNSW": {"M": 16, "efConstruction": 200},
    "IVF_FLAT": {"nlist": 1024},
}
DEFAULT_SEARCH_PARAMS: dict[str, dict[str, Any]] = {
    "FLAT": {},
    "HNSW": {"ef": 64},  # raised to the call's limit when smaller (Milvus needs ef >= limit)
    "IVF_FLAT": {"nprobe": 32},
}
SCALAR_INDEXED = ("tenant", "content_hash", "pixel_hash")
OUTPUT_FIELDS = ["tenant", "image_id", "ts", "canonical_id", "content_hash", "pixel_hash"]
UPSERT_CHUNK = 2000  # rows per call: ~4 MiB at dim 512, far below gRPC's 64 MiB message cap
QUERY_CHUNK = 1000  # ids per `pk in [...]` query
MAX_QUERY_ROWS = 16384


def _settle_pymilvus_lazy_imports() -> None:
    """Run pymilvus's lazy scipy.sparse check once, on one thread.

    pymilvus looks for scipy.sparse on its first search, without a lock; two tenant groups
    searching at once on a fresh process can meet a half-imported module ("partially initialized
    module 'scipy.sparse._bsr'"), which fails the batch as a non-retriable error.
    """
    with contextlib.suppress(Exception):
        from pymilvus.client.utils import SciPyHelper

        SciPyHelper.is_spmatrix(None)


class MilvusStore:
    """Near-duplicate image index in one Milvus collection.

    Keyword-only arguments (the CLI maps ``DUPSTREAM_INDEX``, ``DUPSTREAM_INDEX_TOKEN`` and
    ``DUPSTREAM_COLLECTION`` onto them; this class reads no environment):

    uri
        ``*.db`` file path: milvus-lite, in-process; ``http(s)://host:port``: a Milvus server.
        Exactly one of ``uri`` and ``client``.
    client
        An existing ``pymilvus.MilvusClient`` to share (one client per process); the store
        does not close it.
    collection
        Collection name, default ``"dupstream_images"``.
    dim, model_id
        Vector size and the encoder's id (``EncoderInfo.model_id``). Both are recorded in the
        collection; opening it with other values raises :class:`IndexSchemaError`.
    metric
        ``"IP"`` (default; inner product of L2-normalised vectors = cosine) or ``"COSINE"``.
    index_type
        ``"auto"`` (default: ``FLAT`` on milvus-lite, ``IVF_FLAT`` on a server), ``"FLAT"``,
        ``"HNSW"`` or ``"IVF_FLAT"``; ``index_params``/``search_params`` override the defaults
        (HNSW ``M=16, efConstruction=200`` / ``ef=64``; IVF_FLAT ``nlist=1024`` / ``nprobe=32``).
        Only used when creating; an existing collection keeps its index.
    consistency
        Default ``"Strong"``. A worker must see the images it (or a worker on another partition)
        upserted a moment ago, or a copy arriving right after its original is not recognised
        and decisions change between a run and its replay. ``Session`` only covers this
        process's own writes and ``Bounded`` lags by design. Strong costs a wait for the next
        time tick per call on a server (~0.2 s on Milvus 2.3), which batched search amortises.
        milvus-lite ignores the level: it serves reads from the writer's own memory, so every
        read already sees every acknowledged write.
    token
        Server credentials (``"user:password"`` or an API key).
    timeout
        Seconds per Milvus call, default 10 (creation and loading get at least 60). Also
        bounds pymilvus's own reconnect retries, so an outage surfaces as
        :class:`IndexUnavailableError` instead of minutes of silent retrying.
    search_workers
        Threads for concurrent search calls (groups of a batch), default 4.
    lite_flush_rows
        milvus-lite only: flush after this many upserted rows (default 256). milvus-lite scans
        unflushed rows in pure Python: at 10k vectors (dim 512) a batch of 32 searches took
        ~0.33 s flushing every 256 rows, ~0.55 s every 1024, ~0.84 s every 4096.
    """

    def __init__(
        self,
        *,
        uri: str | None = None,
        client: Any = None,
        collection: str = "dupstream_images",
        dim: int,
        model_id: str,
        metric: str = "IP",
        index_type: str = "auto",
        index_params: Mapping[str, Any] | None = None,
        search_params: Mapping[str, Any] | None = None,
        consistency: str = "Strong",
        token: str | None = None,
        timeout: float = 10.0,
        search_workers: int = 4,
        lite_flush_rows: int = 256,
    ) -> None:
        if (uri is None) == (client is None):
            raise IndexRequestError("give exactly one of uri= (a *.db file or http://host:port) and client=")
        if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= 32768:
            raise IndexRequestError(f"dim must be an int in 1..32768, got {dim!r}")
        if not isinstance(model_id, str) or not model_id:
            raise IndexRequestError(
                f"model_id must be a non-empty str (EncoderInfo.model_id), got {model_id!r}"
            )
        metric = str(metric).upper()
        if metric not in METRICS:
            raise IndexRequestError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        index_type = index_type if index_type == "auto" else str(index_type).upper()
        if index_type not in INDEX_TYPES:
            raise IndexRequestError(f"index_type must be one of {', '.join(INDEX_TYPES)}, got {index_type!r}")
        if consistency not in CONSISTENCY_LEVELS:
            raise IndexRequestError(
                f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, got {consistency!r}"
            )
        if timeout <= 0 or search_workers < 1 or lite_flush_rows < 1:
            raise IndexRequestError("timeout, search_workers and lite_flush_rows must be positive")

        self.collection = collection
        self.dim = dim
        self.model_id = model_id
        self.metric = metric
        self.consistency = consistency
        self._requested_index = index_type
        self._index_params = dict(index_params or {})
        self._search_params = dict(search_params or {})
        self._timeout = float(timeout)
        self._setup_timeout = max(self._timeout, 60.0)
        self._workers = search_workers
        self._lite_flush_rows = lite_flush_rows
        _settle_pymilvus_lazy_imports()
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._unflushed = 0
        self._closed = False
        self._index_type: str | None = None  # the collection's, once known

        if uri is not None:
            self._where = _redact(uri)
            self._lite: bool | None = uri.endswith(".db")
            if not self._lite and not uri.startswith(("http://", "https://", "tcp://", "unix:")):
                raise IndexRequestError(
                    f"uri must be a milvus-lite file ending in .db or a server URL such as "
                    f"http://127.0.0.1:19530, got {self._where!r}"
                )
            self._client = self._call("connect", lambda: _connect(uri, token, self._timeout))
            self._owns_client = True
        else:
            self._where = "injected client"
            self._lite = None
            self._client = client
            self._owns_client = False

    @property
    def index_type(self) -> str | None:
        """The vector index type of the collection (known after :meth:`ensure_collection`)."""
        return self._index_type

    # ── lifecycle ───────────────────────────────────────────────────────────────────────────

    def ensure_collection(self) -> None:
        """Create the collection if missing, check it if present, and load it. Idempotent.

        Raises :class:`IndexSchemaError` (``schema_mismatch``) when the existing collection was
        built with another dim, metric or model id, or lacks a field; it never drops anything.
        """
        c = self._client
        name = self.collection
        t = self._setup_timeout
        if not self._call("has_collection", lambda: c.has_collection(name, timeout=t)):
            try:
                self._call("create_collection", self._create)
                logger.info(
                    "created collection %s at %s (dim=%d metric=%s index=%s model_id=%s)",
                    name,
                    self._where,
                    self.dim,
                    self.metric,
                    self._resolved_index_type(),
                    self.model_id,
                )
            except IndexStoreError:
                # Another worker may have created it between our check and our create.
                if not self._call("has_collection", lambda: c.has_collection(name, timeout=t)):
                    raise
        self._call("describe_collection", self._verify)
        from pymilvus.client.types import LoadState

        state = self._call("get_load_state", lambda: c.get_load_state(name, timeout=t))
        if state.get("state") != LoadState.Loaded:
            self._call("load_collection", lambda: c.load_collection(name, timeout=t))

    def close(self) -> None:
        """Stop the search threads and close the client if this store opened it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        if self._owns_client:
            self._call("close", self._client.close)

    def __enter__(self) -> MilvusStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ── writes ──────────────────────────────────────────────────────────────────────────────

    def upsert(self, records: Sequence[IndexRecord]) -> int:
        """Insert or replace records by ``(tenant, image_id)``; returns how many rows were written.

        A record repeated in ``records`` is written once, the last occurrence winning (as if
        they were upserted one after another). Visible to searches as soon as this returns.
        """
        rows: dict[str, dict[str, Any]] = {}
        for record in records:
            if not isinstance(record, IndexRecord):
                raise IndexRequestError(f"upsert() takes IndexRecord values, got {type(record).__name__}")
            pk = make_pk(record.tenant, record.image_id)
            rows[pk] = {
                "pk": pk,
                "tenant": record.tenant,
                "image_id": record.image_id,
                "ts": _check_ts(record.ts),
                "content_hash": check_hash(record.content_hash, "content_hash"),
                "pixel_hash": check_hash(record.pixel_hash, "pixel_hash"),
                "canonical_id": _check_canonical(record.canonical_id),
                "vector": self._check_vector(record.vector),
            }
        if not rows:
            return 0
        values = list(rows.values())
        for start in range(0, len(values), UPSERT_CHUNK):
            chunk = values[start : start + UPSERT_CHUNK]
            self._call("upsert", partial(self._client.upsert, self.collection, chunk, timeout=self._timeout))
        self._maybe_flush(len(values))
        return len(values)

    def delete(self, ids: Sequence[str], *, tenant: str) -> int:
        """Delete ``ids`` of ``tenant``; returns how many existed. Unknown ids are ignored."""
        pks = self._pks(ids, tenant)
        if not pks:
            return 0
        existing = [row["pk"] for row in self._query_pks(pks, ["pk"])]
        for start in range(0, len(existing), QUERY_CHUNK):
            expr = in_expr("pk", existing[start : start + QUERY_CHUNK])
            self._call(
                "delete", partial(self._client.delete, self.collection, filter=expr, timeout=self._timeout)
            )
        return len(existing)

    # ── reads ───────────────────────────────────────────────────────────────────────────────

    def get(self, ids: Sequence[str], *, tenant: str) -> dict[str, IndexRecord]:
        """The stored records of ``ids`` (vectors included), by image id; missing ids are absent."""
        pks = self._pks(ids, tenant)
        rows = self._query_pks(pks, [*OUTPUT_FIELDS, "vector"])
        return {row["image_id"]: _record(row) for row in rows}

    def count(self, tenant: str | None = None) -> int:
        """Number of records, of one tenant or of all."""
        expr = "" if tenant is None else tenant_expr(check_id(tenant, "tenant", MAX_TENANT_BYTES))
        rows = self._call(
            "count",
            lambda: self._client.query(
                self.collection,
                filter=expr,
                output_fields=["count(*)"],
                consistency_level=self.consistency,
                timeout=self._timeout,
            ),
        )
        return int(rows[0]["count(*)"]) if rows else 0

    def find_by_hash(
        self,
        hashes: Sequence[str],
        *,
        tenant: str,
        before: tuple[int, str] | None = None,
    ) -> dict[str, Match]:
        """The earliest record of ``tenant`` whose content or pixel hash is in ``hashes``.

        Keyed by the hash that matched (a record can answer for two hashes); ``score`` is 1.0.
        With ``before=(ts, image_id)`` only strictly earlier records count. Empty hashes are
        skipped: they mean "unknown", never "equal".
        """
        check_id(tenant, "tenant", MAX_TENANT_BYTES)
        wanted = sorted({check_hash(h, "hash") for h in hashes} - {""})
        if not wanted:
            return {}
        by_hash = f"{in_expr('content_hash', wanted)} or {in_expr('pixel_hash', wanted)}"
        expr = f"{tenant_expr(tenant)} and ({by_hash})"
        if before is not None:
            expr += f" and {before_expr(*_check_before(before))}"
        rows = self._call(
            "find_by_hash",
            lambda: self._client.query(
                self.collection,
                filter=expr,
                output_fields=OUTPUT_FIELDS,
                limit=MAX_QUERY_ROWS,
                consistency_level=self.consistency,
                timeout=self._timeout,
            ),
        )
        if len(rows) >= MAX_QUERY_ROWS:
            logger.warning(
                "find_by_hash: %d records share %d hashes in %s; the earliest may be missed",
                len(rows),
                len(wanted),
                self.collection,
            )
        found: dict[str, Match] = {}
        wanted_set = set(wanted)
        for row in rows:
            match = _match(row, 1.0)
            for digest in {match.content_hash, match.pixel_hash} & wanted_set:
                if digest not in found or match.order_key < found[digest].order_key:
                    found[digest] = match
        return found

    def search(
        self,
        vectors: np.ndarray,
        *,
        tenants: Sequence[str],
        before: Sequence[tuple[int, str] | None] | None = None,
        top_k: int = 10,
        min_score: float | None = None,
    ) -> list[list[Match]]:
        """Nearest indexed images of each query vector, best first, one list per query.

        Query ``i`` sees only records of ``tenants[i]`` and, when ``before`` is given, only
        records strictly before ``before[i] = (ts, image_id)`` in ``(ts, image_id)`` order: so
        an image never matches itself or anything later, and a replay decides the same way.
        ``min_score`` drops weaker matches. Equal scores come in ``(ts, image_id)`` order.

        Queries are grouped per tenant into as few Milvus calls as possible (see
        :mod:`index.plan`); the answer is the same as one exact search per query.
        """
        queries = self._check_queries(vectors)
        n = len(queries)
        if isinstance(tenants, str) or len(tenants) != n:
            raise IndexRequestError(f"tenants must be a sequence of {n} str (one per vector)")
        for tenant in tenants:
            check_id(tenant, "tenant", MAX_TENANT_BYTES)
        bounds: list[tuple[int, str] | None] | None = None
        if before is not None:
            if len(before) != n:
                raise IndexRequestError(f"before must have {n} (ts, image_id) pairs, got {len(before)}")
            bounds = [None if b is None else _check_before(b) for b in before]
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_LIMIT:
            raise IndexRequestError(f"top_k must be an int in 1..{MAX_LIMIT}, got {top_k!r}")
        if n == 0:
            return []

        results: list[list[Match] | None] = [None] * n
        rows = list(range(n))
        for limit in (top_k, top_k + n):  # fresh events first; then room for a replay's own images
            groups = plan_groups([tenants[r] for r in rows], _pick(bounds, rows), limit)
            groups = [dataclasses.replace(g, rows=tuple(rows[i] for i in g.rows)) for g in groups]
            redo: list[int] = []
            raw = self._map(lambda g: self._search_group(queries, g), groups)
            for group, per_query in zip(groups, raw, strict=True):
                for row, hits in zip(group.rows, per_query, strict=True):
                    bound = bounds[row] if bounds is not None else None
                    kept, complete = select(
                        hits, before=bound, top_k=top_k, min_score=min_score, limit=group.limit
                    )
                    if complete:
                        results[row] = kept
                    else:
                        redo.append(row)
            if not redo:
                break
            rows = redo
        if redo:
            logger.debug("search: %d of %d queries need an exact follow-up call", len(redo), n)
            exact = [
                SearchGroup(tenants[row], (row,), bounds[row] if bounds is not None else None, top_k)
                for row in redo
            ]
            again = self._map(lambda g: self._search_group(queries, g), exact)
            for group, per_query in zip(exact, again, strict=True):
                row = group.rows[0]
                kept, _ = select(
                    per_query[0], before=group.bound, top_k=top_k, min_score=min_score, limit=top_k
                )
                results[row] = kept
        return [r if r is not None else [] for r in results]

    # ── internals ───────────────────────────────────────────────────────────────────────────

    def _search_group(self, queries: np.ndarray, group: SearchGroup) -> list[list[Match]]:
        expr = tenant_expr(group.tenant)
        if group.bound is not None:
            expr += f" and {before_expr(*group.bound)}"
        data = queries[list(group.rows)]
        hits = self._call(
            "search",
            lambda: self._client.search(
                self.collection,
                data=data,
                filter=expr,
                limit=group.limit,
                output_fields=OUTPUT_FIELDS,
                search_params={
                    "metric_type": self.metric,
                    "params": self._runtime_search_params(group.limit),
                },
                consistency_level=self.consistency,
                timeout=self._timeout,
            ),
        )
        return [
            [_match(hit.get("entity", hit), float(hit["distance"])) for hit in per_query]
            for per_query in hits
        ]

    def _map(self, fn: Callable[[SearchGroup], T], groups: list[SearchGroup]) -> list[T]:
        if len(groups) == 1:
            return [fn(groups[0])]
        with self._lock:
            if self._closed:
                raise IndexStoreError(f"store for {self.collection!r} is closed")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="dupstream-index")
            pool = self._pool
        return list(pool.map(fn, groups))

    def _query_pks(self, pks: list[str], fields: list[str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for start in range(0, len(pks), QUERY_CHUNK):
            expr = in_expr("pk", pks[start : start + QUERY_CHUNK])
            query = partial(
                self._client.query,
                self.collection,
                filter=expr,
                output_fields=fields,
                consistency_level=self.consistency,
                timeout=self._timeout,
            )
            rows.extend(self._call("query", query))
        return rows

    def _pks(self, ids: Sequence[str], tenant: str) -> list[str]:
        if isinstance(ids, str):
            raise IndexRequestError("ids must be a sequence of image ids, not one str")
        return list(dict.fromkeys(make_pk(tenant, image_id) for image_id in ids))

    def _create(self) -> None:
        from pymilvus import DataType, MilvusClient

        c = self._client
        index_type = self._resolved_index_type()
        schema = MilvusClient.create_schema(
            auto_id=False,
            enable_dynamic_field=False,
            description=f"dupstream images; model_id={self.model_id}",
        )
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=MAX_PK_BYTES)
        schema.add_field("tenant", DataType.VARCHAR, max_length=MAX_TENANT_BYTES)
        schema.add_field("image_id", DataType.VARCHAR, max_length=MAX_IMAGE_ID_BYTES)
        schema.add_field("ts", DataType.INT64)
        schema.add_field("content_hash", DataType.VARCHAR, max_length=MAX_HASH_BYTES)
        schema.add_field("pixel_hash", DataType.VARCHAR, max_length=MAX_HASH_BYTES)
        schema.add_field("canonical_id", DataType.VARCHAR, max_length=MAX_IMAGE_ID_BYTES)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)

        c.create_collection(
            self.collection,
            schema=schema,
            consistency_level=self.consistency,
            properties={PROP_MODEL_ID: self.model_id, PROP_SCHEMA_VERSION: SCHEMA_VERSION},
            timeout=self._setup_timeout,
        )
        index_params = c.prepare_index_params()
        index_params.add_index(
            "vector",
            index_type=index_type,
            metric_type=self.metric,
            params={**DEFAULT_INDEX_PARAMS[index_type], **self._index_params},
        )
        # milvus-lite implements only INVERTED; a server picks its default for VARCHAR
        # when the type is empty (Trie on 2.3, INVERTED on later versions).
        scalar_type = "INVERTED" if self._is_lite() else ""
        for field in SCALAR_INDEXED:
            index_params.add_index(field, index_type=scalar_type)
        # sync=False: the collection is empty, and pymilvus would sleep 0.5 s per index polling
        # its state. ensure_collection() loads the collection next.
        c.create_index(self.collection, index_params, timeout=self._setup_timeout, sync=False)

    def _verify(self) -> None:
        c = self._client
        desc = c.describe_collection(self.collection, timeout=self._setup_timeout)
        fields = {f["name"]: f for f in desc.get("fields", [])}
        props = desc.get("properties") or {}
        actual_dim = _int_or_none(fields.get("vector", {}).get("params", {}).get("dim"))
        actual_model = props.get(PROP_MODEL_ID)
        actual_metric, actual_index = self._vector_index()
        problems = []
        missing = [f for f in (*OUTPUT_FIELDS, "pk", "vector") if f not in fields]
        if missing:
            problems.append(f"fields {missing} are missing")
        if actual_dim != self.dim:
            problems.append(f"dim is {actual_dim}, expected {self.dim}")
        if actual_metric is not None and actual_metric.upper() != self.metric:
            problems.append(f"metric is {actual_metric}, expected {self.metric}")
        if actual_model != self.model_id:
            problems.append(f"model_id is {actual_model!r}, expected {self.model_id!r}")
        version = props.get(PROP_SCHEMA_VERSION)
        if version is not None and version != SCHEMA_VERSION:
            problems.append(f"schema version is {version}, expected {SCHEMA_VERSION}")
        if problems:
            raise IndexSchemaError(
                f"collection {self.collection!r} at {self._where} does not match this store: "
                f"{'; '.join(problems)}. Vectors from different models, sizes or metrics cannot be "
                f"compared. Point the store at another collection (DUPSTREAM_COLLECTION / "
                f"--collection) or re-index into a new one; dupstream never drops a collection.",
                reason="schema_mismatch",
            )
        if actual_index is None:
            # Created but never indexed (a crash in between): finish the job.
            index_type = self._resolved_index_type()
            params = c.prepare_index_params()
            params.add_index(
                "vector",
                index_type=index_type,
                metric_type=self.metric,
                params={**DEFAULT_INDEX_PARAMS[index_type], **self._index_params},
            )
            c.create_index(self.collection, params, timeout=self._setup_timeout)
            actual_index = index_type
        requested = self._requested_index
        if requested != "auto" and actual_index != requested:
            logger.warning(
                "collection %s has a %s index, not the requested %s; keeping it",
                self.collection,
                actual_index,
                requested,
            )
        self._index_type = actual_index

    def _vector_index(self) -> tuple[str | None, str | None]:
        """(metric, index type) of the vector field's index, or (None, None) if it has none."""
        c = self._client
        for name in c.list_indexes(self.collection, field_name="vector", timeout=self._setup_timeout) or []:
            info = c.describe_index(self.collection, name, timeout=self._setup_timeout) or {}
            if info.get("field_name", "vector") == "vector":
                return info.get("metric_type"), info.get("index_type")
        return None, None

    def _resolved_index_type(self) -> str:
        if self._requested_index != "auto":
            return self._requested_index
        # IVF_FLAT, not HNSW: with the tenant and order filters, Milvus 2.3's HNSW (ef 64) ranked
        # a cosine-0.9 copy first for only 70% of queries at 100k vectors; IVF_FLAT (nprobe 32) for
        # 100% at 10k, 100k and 1M (bench/index.py, docs/performance.md).
        return "FLAT" if self._is_lite() else "IVF_FLAT"

    def _runtime_search_params(self, limit: int) -> dict[str, Any]:
        index_type = self._index_type or self._resolved_index_type()
        params = {**DEFAULT_SEARCH_PARAMS.get(index_type, {}), **self._search_params}
        if index_type == "HNSW":
            params["ef"] = max(int(params.get("ef", 0)), limit)
        return params

    def _is_lite(self) -> bool:
        if self._lite is None:
            version = str(
                self._call(
                    "get_server_version", lambda: self._client.get_server_version(timeout=self._timeout)
                )
            )
            self._lite = version.lower().startswith("milvus_lite")
        return self._lite

    def _maybe_flush(self, rows: int) -> None:
        if not self._is_lite():
            return  # a server seals and indexes segments itself; explicit flushes only slow it
        with self._lock:
            self._unflushed += rows
            due = self._unflushed >= self._lite_flush_rows
            if due:
                self._unflushed = 0
        if due:
            self._call("flush", lambda: self._client.flush(self.collection, timeout=self._setup_timeout))

    def _check_vector(self, vector: np.ndarray) -> np.ndarray:
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        if v.shape != (self.dim,):
            raise IndexRequestError(f"vector has {v.size} values, the collection stores dim={self.dim}")
        if not np.isfinite(v).all():
            raise IndexRequestError("vector contains NaN or infinity")
        return v

    def _check_queries(self, vectors: np.ndarray) -> np.ndarray:
        q = np.asarray(vectors, dtype=np.float32)
        if q.ndim == 1 and q.size == self.dim:
            q = q.reshape(1, -1)
        if q.ndim != 2 or (q.shape[0] and q.shape[1] != self.dim):
            raise IndexRequestError(f"vectors must have shape (n, {self.dim}), got {q.shape}")
        if not np.isfinite(q).all():
            raise IndexRequestError("query vectors contain NaN or infinity")
        return np.ascontiguousarray(q)

    def _call(self, op: str, fn: Callable[[], T]) -> T:
        with self._boundary(op):
            return fn()

    @contextmanager
    def _boundary(self, op: str) -> Iterator[None]:
        """Translate pymilvus/gRPC exceptions into index errors, once."""
        try:
            yield
        except IndexStoreError:
            raise
        except Exception as exc:
            if "not loaded" in str(exc) and op != "load":
                # A restarted server comes back with the collection released: load it again and
                # let the caller retry, rather than fail the batch as if the request were bad.
                with contextlib.suppress(Exception):
                    self._client.load_collection(self.collection, timeout=self._setup_timeout)
                raise IndexUnavailableError(
                    f"collection {self.collection!r} at {self._where} was not loaded (server restarted?); "
                    "loading it again, retry",
                    reason="index_unavailable",
                ) from exc
            raise translate(exc, op=op, collection=self.collection, where=self._where) from exc


# ── helpers ─────────────────────────────────────────────────────────────────────────────────


def _connect(uri: str, token: str | None, timeout: float) -> Any:
    from pymilvus import MilvusClient

    return MilvusClient(uri=uri, token=token or "", timeout=timeout)


def translate(exc: BaseException, *, op: str, collection: str, where: str) -> IndexStoreError:
    """The index error for a pymilvus/gRPC exception raised by ``op``."""
    from pymilvus.exceptions import (
        CollectionNotExistException,
        DataNotMatchException,
        DataTypeNotMatchException,
        MilvusException,
        ParamError,
    )

    detail = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    context = f"{op} on collection {collection!r} at {where}"
    if _unavailable(exc):
        return IndexUnavailableError(
            f"Milvus is unavailable during {context}: {detail}. Retrying later can help; "
            f"check that the server is running and reachable."
        )
    code = getattr(exc, "code", None)
    legacy = getattr(exc, "compatible_code", None)
    if (
        isinstance(exc, CollectionNotExistException)
        or code == 100
        or (isinstance(exc, MilvusException) and legacy == 4)
    ):
        return IndexSchemaError(
            f"collection {collection!r} does not exist at {where} ({op}); call ensure_collection() first",
            reason="collection_missing",
        )
    if isinstance(exc, ParamError | DataNotMatchException | DataTypeNotMatchException):
        return IndexRequestError(f"Milvus rejected the arguments of {context}: {detail}")
    return IndexStoreError(f"Milvus failed {context}: {detail}")


def _unavailable(exc: BaseException) -> bool:
    import grpc
    from pymilvus.exceptions import ConnectError, MilvusException, MilvusUnavailableException

    transient = {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MilvusUnavailableException | ConnectError | ConnectionError | TimeoutError):
            return True
        code_of = getattr(current, "code", None)
        if isinstance(current, grpc.RpcError) and callable(code_of) and code_of() in transient:
            return True
        if isinstance(current, MilvusException):
            code = current.code
            # 2: the client could not connect (CONNECT_FAILED) / the server says ServiceUnavailable;
            # 8: rate limited. Both pass with time.
            if code in transient or code in (2, 8):
                return True
        current = current.__cause__ or current.__context__
    return False


def _redact(uri: str) -> str:
    """The URI without credentials, for messages and logs."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _check_ts(ts: object) -> int:
    if isinstance(ts, bool) or not isinstance(ts, int | np.integer):
        raise IndexRequestError(f"ts must be an int (event time in ms), got {type(ts).__name__}")
    value = int(ts)
    if not -(2**63) <= value < 2**63:
        raise IndexRequestError(f"ts {value} does not fit INT64")
    return value


def _check_before(before: object) -> tuple[int, str]:
    if not isinstance(before, tuple | list) or len(before) != 2:
        raise IndexRequestError(f"before must be a (ts, image_id) pair, got {before!r}")
    ts, image_id = before
    if not isinstance(image_id, str):
        raise IndexRequestError(f"before image_id must be a str, got {type(image_id).__name__}")
    return _check_ts(ts), image_id


def _check_canonical(value: str | None) -> str:
    if not value:
        return ""
    return check_id(value, "canonical_id", MAX_IMAGE_ID_BYTES)


def _int_or_none(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _match(row: Mapping[str, Any], score: float) -> Match:
    return Match(
        tenant=row["tenant"],
        image_id=row["image_id"],
        ts=int(row["ts"]),
        score=score,
        canonical_id=row.get("canonical_id") or "",
        content_hash=row.get("content_hash") or "",
        pixel_hash=row.get("pixel_hash") or "",
    )


def _record(row: Mapping[str, Any]) -> IndexRecord:
    return IndexRecord(
        tenant=row["tenant"],
        image_id=row["image_id"],
        ts=int(row["ts"]),
        vector=np.asarray(row["vector"], dtype=np.float32),
        content_hash=row.get("content_hash") or "",
        pixel_hash=row.get("pixel_hash") or "",
        canonical_id=row.get("canonical_id") or "",
    )


def _pick(
    bounds: list[tuple[int, str] | None] | None, rows: list[int]
) -> list[tuple[int, str] | None] | None:
    return None if bounds is None else [bounds[r] for r in rows]

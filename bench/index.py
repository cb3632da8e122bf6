"""Index benchmark: load rate, batched search latency, recall and memory, milvus-lite and a Milvus server.

    .venv/bin/python bench/index.py                       # 10k vectors: milvus-lite + embedded server
    .venv/bin/python bench/index.py --sizes 10000,100000,1000000 --index-types FLAT,IVF_FLAT,HNSW \\
        --json-out bench/results/index-$(date +%F).json
    .venv/bin/python bench/index.py --uri http://host:19530 --no-lite

Backends (``--index-types``): ``FLAT`` is milvus-lite (a ``*.db`` file; brute force, its only
vector index in dupstream), ``HNSW`` and ``IVF_FLAT`` are a Milvus server with that index and the
store's default parameters (HNSW M=16/efConstruction=200/ef=max(64, limit), IVF_FLAT nlist=1024/
nprobe=32). The server is the embedded Milvus 2.3.5 standalone of the ``milvus`` package, started
fresh (new base dir) for every run so its RSS baseline is clean, or each ``--uri`` (no RSS then).

Each run (one backend, one size; vectors dim 512, 4 tenants, unit vectors, ts = 10 * row):

1. bulk load ``size - --extra`` rows through ``MilvusStore.upsert`` in calls of ``--bulk-batch`` rows
   (``--bulk-via insert``: ``MilvusClient.insert`` directly), then ``--extra`` rows in the stream's
   shape (``store.upsert`` of ``--batch`` = 32 rows per call) on the populated collection;
2. build: ``flush``, then (server) wait until ``describe_index`` reports every row indexed and the
   server's CPU settles (background compaction / index hand-off);
3. batched search latency, ``store.search`` of 32 queries, top_k 10, each with its own ``before``
   bound, as the service calls it: "fresh" (new events: everything indexed is earlier) and
   "replay" (32 consecutive indexed events, each sees only what came before it), p50/p95 of
   ``--repeat`` calls;
4. recall@10 against an exact numpy search honouring the tenant filter and the ``before`` bound
   (strictly earlier ``(ts, image_id)``): ``--recall-queries`` queries in batches of 32, 80% noisy
   copies of stored vectors (cosine ~0.9 to their source), 20% random unit vectors; half of them
   with a fresh bound, half with a bound somewhere inside the collection's history;
5. RSS of the backend (milvus-lite runs in-process as threads since milvus-lite 3: the RSS of the
   benchmark's run process, which allocates its own vectors before the baseline; the server: its
   process tree) after the empty collection is created and after loading + indexing + searching.

Every run happens in a fresh ``spawn`` subprocess, so milvus-lite's RSS baseline is clean. When the
load+index time of an index type at one size, scaled linearly, predicts more than ``--max-build-s``
for the next size, that run is skipped and the reason recorded. Progress goes to stderr; a markdown
table and the JSON go to stdout (and the JSON to ``--json-out``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index import IndexRecord, MilvusStore
from index.keys import make_pk

TENANTS = 4
TOP_K = 10
NOISE = 0.02  # per dimension: a noisy copy has cosine ~0.9 to its source at dim 512
SERVER_INDEXES = ("HNSW", "IVF_FLAT")
KINDS = ("FLAT", *SERVER_INDEXES)
_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:8.1f}s] {msg}", file=sys.stderr, flush=True)


# ── data ────────────────────────────────────────────────────────────────────────────────────


def unit(n: int, dim: int, seed: int, chunk: int = 50_000) -> np.ndarray:
    """``n`` random unit vectors (float32), generated in chunks to bound temporary memory."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        v = rng.standard_normal(size=(min(chunk, n - start), dim), dtype=np.float32)
        out[start : start + len(v)] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def normed(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


class Data:
    """The stored rows: row ``i`` is tenant ``t{i % 4}``, image ``img{i:07d}``, ts ``10 * i``."""

    def __init__(self, n: int, dim: int, seed: int = 0) -> None:
        self.n = n
        self.dim = dim
        self.vectors = unit(n, dim, seed)
        self.tenant_no = np.arange(n) % TENANTS
        self.ts = np.arange(n, dtype=np.int64) * 10

    @staticmethod
    def tenant(i: int) -> str:
        return f"t{i % TENANTS}"

    @staticmethod
    def image_id(i: int) -> str:
        return f"img{i:07d}"

    def records(self, lo: int, hi: int) -> list[IndexRecord]:
        return [
            IndexRecord(tenant=self.tenant(i), image_id=self.image_id(i), ts=i * 10, vector=self.vectors[i])
            for i in range(lo, hi)
        ]

    def rows(self, lo: int, hi: int) -> list[dict[str, Any]]:
        """Rows for ``MilvusClient.insert``, exactly as ``MilvusStore.upsert`` writes them."""
        return [
            {
                "pk": make_pk(self.tenant(i), self.image_id(i)),
                "tenant": self.tenant(i),
                "image_id": self.image_id(i),
                "ts": i * 10,
                "content_hash": "",
                "pixel_hash": "",
                "canonical_id": "",
                "vector": self.vectors[i],
            }
            for i in range(lo, hi)
        ]

    def exact(
        self, queries: np.ndarray, tenants: list[str], before: list[tuple[int, str]], top_k: int
    ) -> list[list[str]]:
        """Exact top-k image ids per query: same tenant, strictly before ``(ts, image_id)``."""
        out: list[list[str]] = [[] for _ in range(len(queries))]
        for t in range(TENANTS):
            rows = [q for q, tenant in enumerate(tenants) if tenant == f"t{t}"]
            if not rows:
                continue
            members = np.flatnonzero(self.tenant_no == t)
            scores = queries[rows] @ self.vectors[members].T  # (queries of t, rows of t)
            ts = self.ts[members]
            for k, q in enumerate(rows):
                bound_ts, bound_id = before[q]
                eligible = ts < bound_ts
                for j in np.flatnonzero(ts == bound_ts):  # ties on ts: compare image ids
                    eligible[j] = self.image_id(int(members[j])) < bound_id
                s = np.where(eligible, scores[k], -np.inf)
                m = min(top_k, int(eligible.sum()))
                if m == 0:
                    continue
                top = np.argpartition(-s, m - 1)[:m]
                top = top[np.argsort(-s[top], kind="stable")]
                out[q] = [self.image_id(int(members[j])) for j in top]
        return out


# ── process memory and CPU (psutil when installed, /proc otherwise) ───────────────────────


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants, MiB."""
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])  # kB
    return round(total / 1024, 1)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` and its descendants."""
    ticks = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def milvus_servers() -> list[str]:
    """Command lines of running Milvus standalone servers (one per machine: fixed pid file)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                cmd = (
                    Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
                if "milvus" in cmd and "standalone" in cmd:
                    found.append(f"{entry}: {cmd.strip()}")
    return found


def settle(pid: int, *, max_s: float, window_s: float = 3.0, idle_cores: float = 0.25) -> dict[str, Any]:
    """Wait until ``pid``'s tree uses under ``idle_cores`` CPU over ``window_s`` (at most ``max_s``)."""
    started = time.monotonic()
    load = 0.0
    while True:
        before = cpu_s(pid)
        time.sleep(window_s)
        load = (cpu_s(pid) - before) / window_s
        waited = time.monotonic() - started
        if load < idle_cores or waited >= max_s:
            return {"settle_s": round(waited, 1), "settled": load < idle_cores, "cpu_cores": round(load, 2)}


# ── one run ─────────────────────────────────────────────────────────────────────────────────


def timed(fn: Callable[[], Any], repeat: int, budget_s: float = 90.0) -> dict[str, float]:
    """p50/p95 of ``repeat`` calls after a warm-up (fewer, at least 5, when they exceed ``budget_s``)."""
    fn()  # warm-up
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
        if len(samples) >= 5 and started > deadline:
            break
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 1),
        "p95_ms": round(samples[int(0.95 * (len(samples) - 1))], 1),
        "n": len(samples),
    }


def wait_indexed(client: Any, name: str, n: int, timeout_s: float) -> dict[str, Any]:
    """Wait until every row is indexed and no index build is pending.

    ``indexed_rows`` reaches ``n`` first; at 1M rows the server then keeps compacting its small
    sealed segments (~40k rows) into larger ones and indexing those for many more minutes
    (``pending_index_rows`` > 0, both cores busy). Waiting for that too keeps the background work
    out of the search figures; ``all_rows_indexed_s`` says when ``indexed_rows`` first reached ``n``.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    info: dict[str, Any] = {}
    first: float | None = None
    while True:
        info = client.describe_index(name, "vector") or {}
        indexed = int(info.get("indexed_rows", 0))
        if indexed >= n and first is None:
            first = round(time.monotonic() - started, 1)
        done = indexed >= n and int(info.get("pending_index_rows", 0)) == 0
        if done or time.monotonic() > deadline:
            return {
                "indexed": done,
                "indexed_rows": indexed,
                "pending_index_rows": int(info.get("pending_index_rows", 0)),
                "all_rows_indexed_s": first,
            }
        time.sleep(1.0)


def wait_loaded(client: Any, name: str, n: int, timeout_s: float) -> dict[str, Any]:
    """Wait until the query node serves ``n`` rows from sealed (indexed) segments.

    An index reported finished is not yet searched: until the query node loads the sealed
    segment, searches still go to the growing segment and its interim index (IVF nlist 128,
    nprobe 16), whose recall is not the index's.
    """
    started = time.monotonic()
    while True:
        segments = client.list_loaded_segments(name)
        rows = sum(s.num_rows for s in segments if s.state_name == "Sealed")
        if rows >= n or time.monotonic() - started > timeout_s:
            return {"sealed_rows_loaded": rows, "sealed_segments": len(segments)}
        time.sleep(1.0)


def index_code() -> str:
    """Short digest of the ``index`` package this run imported (the tree may change between runs)."""
    import hashlib

    import index

    digest = hashlib.sha256()
    for path in sorted(Path(index.__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """One backend at one size (runs in its own process). ``spec`` keys: see :func:`main`."""
    from pymilvus import MilvusClient

    # pymilvus imports scipy.sparse lazily inside its first search; the store's search threads
    # racing on that first import can fail ("partially initialized module 'scipy.sparse._bsr'").
    with contextlib.suppress(ImportError):
        import scipy.sparse  # noqa: F401

    n, dim, batch, kind, uri = spec["n"], spec["dim"], spec["batch"], spec["kind"], spec["uri"]
    lite = kind == "FLAT"
    label = f"{'milvus-lite' if lite else 'server'} {kind} n={n}"
    phases: dict[str, float] = {}
    out: dict[str, Any] = {"backend": "milvus-lite" if lite else "milvus-server", "index": kind, "vectors": n}
    out |= {"dim": dim, "tenants": TENANTS, "uri": uri if not lite else "(file).db", "phases_s": phases}
    out["index_code"] = index_code()
    mark = time.perf_counter()

    def phase(name: str) -> float:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = round(now - mark, 1)
        mark = now
        return phases[name]

    data = Data(n, dim)
    phase("generate")
    log(f"{label}: {n} vectors generated in {phases['generate']}s")

    attach = spec.get("attach")  # an existing collection: measure it, do not load or drop it
    rss_pid: int | None = None if attach else os.getpid() if lite else spec.get("server_pid")
    client = MilvusClient(uri=uri, timeout=120)
    search_calls = [0]
    plain_search = client.search

    def counted_search(*a: Any, **kw: Any) -> Any:
        search_calls[0] += 1
        return plain_search(*a, **kw)

    client.search = counted_search  # to report Milvus calls per store.search (grouping + follow-ups)
    name = attach or f"bench_{uuid.uuid4().hex[:8]}"
    store = MilvusStore(
        client=client,
        collection=name,
        dim=dim,
        model_id="bench@1",
        index_type="FLAT" if lite else kind,
        search_params=None if lite else spec.get("search_params"),
        timeout=600,
    )
    try:
        store.ensure_collection()
        out["index_type"] = store.index_type
        phase("create")
        if rss_pid is not None:
            out["rss_before_mb"] = rss_mb(rss_pid)

        if attach is None:
            # 1. bulk load, then the stream's shape on the populated collection
            extra = min(spec["extra"], n // 2)
            bulk_n = n - extra
            bulk = spec["bulk_batch"]
            for lo in range(0, bulk_n, bulk):
                hi = min(lo + bulk, bulk_n)
                if spec["bulk_via"] == "insert":
                    rows = data.rows(lo, hi)
                    store._call("insert", lambda rows=rows: client.insert(name, rows, timeout=600))
                else:
                    store.upsert(data.records(lo, hi))
                if (lo // bulk) % max(1, 100_000 // bulk) == 0:
                    log(f"{label}: loaded {hi}/{bulk_n}")
            bulk_s = time.perf_counter() - mark
            phase("bulk_load")
            out["bulk"] = {"rows": bulk_n, "rows_per_call": bulk, "via": spec["bulk_via"]}
            out["bulk_rows_per_s"] = round(bulk_n / bulk_s)
            log(f"{label}: bulk {bulk_n} rows in {bulk_s}s ({out['bulk_rows_per_s']} rows/s)")
            for lo in range(bulk_n, n, batch):
                store.upsert(data.records(lo, min(lo + batch, n)))
            b32_s = time.perf_counter() - mark
            phase("batch_upsert")
            out["batch_upsert"] = {"rows": extra, "rows_per_call": batch}
            out["batch_upsert_rows_per_s"] = round(extra / b32_s)
            log(f"{label}: {extra} rows in batches of {batch}: {out['batch_upsert_rows_per_s']} rows/s")

            # 2. build
            started = time.perf_counter()
            client.flush(name, timeout=1800)
            out["flush_s"] = round(time.perf_counter() - started, 1)
            if not lite:
                out |= wait_indexed(client, name, n, spec["build_timeout_s"])
            out["build_s"] = phase("build")  # flush + the index catching up after the last write
            if not lite and not out["indexed"]:
                out["error"] = (
                    f"index not built within --build-timeout-s {spec['build_timeout_s']:.0f}s: "
                    f"{out['indexed_rows']:,} of {n:,} rows indexed after the load"
                )
                log(f"{label}: {out['error']}")
                return out
            if not lite:
                out |= wait_loaded(client, name, n, spec["build_timeout_s"])
                out["handoff_s"] = phase("handoff")  # the query node loads the sealed, indexed segments
            out["load_to_indexed_s"] = round(bulk_s + b32_s + out["build_s"] + out.get("handoff_s", 0), 1)
            log(
                f"{label}: flushed in {out['flush_s']}s, indexed after {out['build_s']}s, "
                f"loaded by the query node after {out.get('handoff_s')}s"
            )
            if rss_pid is not None and not lite:
                out |= settle(rss_pid, max_s=spec["settle_s"])
                phase("settle")
            if rss_pid is not None:
                out["rss_indexed_mb"] = rss_mb(rss_pid)
        out["count"] = store.count()

        # 3. latency
        rng = np.random.default_rng(1)
        picks = rng.integers(0, n, size=batch)
        queries = normed(data.vectors[picks] + NOISE * rng.standard_normal((batch, dim), dtype=np.float32))
        q_tenants = [data.tenant(int(p)) for p in picks]
        fresh = [(n * 10 + k, f"new{k:02d}") for k in range(batch)]  # new events: everything is earlier
        window = range(n // 2, n // 2 + batch)  # a replayed batch of consecutive indexed events
        noise = NOISE * rng.standard_normal((batch, dim), dtype=np.float32)
        replay_queries = normed(data.vectors[list(window)] + noise)
        replay_tenants = [data.tenant(p) for p in window]
        replay = [(p * 10, data.image_id(p)) for p in window]
        repeat = spec["repeat"]
        calls = search_calls[0]
        out["search_batch32_fresh"] = timed(
            lambda: store.search(queries, tenants=q_tenants, before=fresh, top_k=TOP_K), repeat
        )
        out["search_batch32_fresh"]["milvus_calls"] = (search_calls[0] - calls) / (
            out["search_batch32_fresh"]["n"] + 1
        )
        calls = search_calls[0]
        out["search_batch32_replay"] = timed(
            lambda: store.search(replay_queries, tenants=replay_tenants, before=replay, top_k=TOP_K), repeat
        )
        out["search_batch32_replay"]["milvus_calls"] = (search_calls[0] - calls) / (
            out["search_batch32_replay"]["n"] + 1
        )
        if not lite:  # the same batch without Strong consistency's wait for the next time tick
            eventually = MilvusStore(
                client=client,
                collection=name,
                dim=dim,
                model_id="bench@1",
                index_type=kind,
                search_params=spec.get("search_params"),
                consistency="Eventually",
                timeout=600,
            )
            out["search_batch32_fresh_eventually"] = timed(
                lambda: eventually.search(queries, tenants=q_tenants, before=fresh, top_k=TOP_K), repeat
            )
            eventually.close()
        if spec["per_query"]:

            def one(k: int) -> Any:
                return store.search(
                    queries[k : k + 1], tenants=[q_tenants[k]], before=[fresh[k]], top_k=TOP_K
                )

            few = max(3, repeat // 4)
            out["search_batch32_per_query_sequential"] = timed(lambda: [one(k) for k in range(batch)], few)
            with ThreadPoolExecutor(8) as pool:
                out["search_batch32_per_query_8_threads"] = timed(
                    lambda: list(pool.map(one, range(batch))), few
                )
        phase("search_latency")
        log(f"{label}: search fresh {out['search_batch32_fresh']} replay {out['search_batch32_replay']}")

        # 4. recall: the store's answers now, the exact answers after the RSS reading
        rq = spec["recall_queries"] // batch * batch
        n_copies = int(rq * 0.8)
        src = rng.integers(0, n, size=n_copies)
        noise = NOISE * rng.standard_normal((n_copies, dim), dtype=np.float32)
        r_queries = np.concatenate([normed(data.vectors[src] + noise), unit(rq - n_copies, dim, 7)])
        r_tenants = [data.tenant(int(p)) for p in src] + [
            f"t{t}" for t in rng.integers(0, TENANTS, size=rq - n_copies)
        ]
        floor = np.concatenate([data.ts[src] + 1, np.zeros(rq - n_copies, dtype=np.int64)])
        inside = rng.random(rq) < 0.5  # half the bounds inside the history, after a copy's source
        r_before = [
            (int(rng.integers(floor[q], n * 10)) if inside[q] else n * 10 + q, f"q{q:05d}") for q in range(rq)
        ]
        found: list[list[str]] = []
        calls = search_calls[0]
        started = time.perf_counter()
        for lo in range(0, rq, batch):
            hits = store.search(
                r_queries[lo : lo + batch],
                tenants=r_tenants[lo : lo + batch],
                before=r_before[lo : lo + batch],
                top_k=TOP_K,
            )
            found.extend([m.image_id for m in per_query] for per_query in hits)
        out["search_batch32_mixed_bounds"] = {
            "mean_ms": round((time.perf_counter() - started) * 1000 / (rq // batch), 1),
            "milvus_calls": (search_calls[0] - calls) / (rq // batch),
        }
        phase("recall_search")
        if rss_pid is not None:
            out["rss_after_mb"] = rss_mb(rss_pid)
            grown = out["rss_after_mb"] - out["rss_before_mb"]
            out["rss_growth_mb"] = round(grown, 1)

        truth = data.exact(r_queries, r_tenants, r_before, TOP_K)
        recall = np.array(
            [len(set(f) & set(t)) / len(t) if t else np.nan for f, t in zip(found, truth, strict=True)]
        )
        is_copy = np.arange(rq) < n_copies

        def mean(mask: np.ndarray) -> float:
            return round(float(np.nanmean(recall[mask])), 4)

        out["recall_at_10"] = mean(np.ones(rq, dtype=bool))
        out["recall"] = {
            "queries": rq,
            "noisy_copies": mean(is_copy),
            "random": mean(~is_copy),
            "bound_inside_history": mean(inside),
            "bound_fresh": mean(~inside),
            "copy_source_first": round(
                float(np.mean([f[:1] == [data.image_id(int(s))] for f, s in zip(found, src, strict=False)])),
                4,
            ),
            "copy_source_in_top10": round(
                float(np.mean([data.image_id(int(s)) in f for f, s in zip(found, src, strict=False)])), 4
            ),
            "exact_answers_with_fewer_than_10": sum(len(t) < TOP_K for t in truth),
            "store_answers_with_fewer_than_10": sum(
                len(f) < min(TOP_K, len(t)) for f, t in zip(found, truth, strict=True)
            ),
        }
        phase("recall_exact")
        log(f"{label}: recall@10 {out['recall_at_10']} {out['recall']}")
    finally:
        store.close()
        if attach is None:
            with contextlib.suppress(Exception):
                client.drop_collection(name)
        client.close()
        if lite:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(uri)
    phases["total"] = round(sum(v for k, v in phases.items() if k != "total"), 1)
    return out


def in_subprocess(spec: dict[str, Any]) -> dict[str, Any]:
    """``run_one`` in a fresh process; leaving early (Ctrl-C, SIGTERM) terminates that process."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # __exit__ terminates the child
        return pool.apply(run_one, (spec,))


# ── orchestration ───────────────────────────────────────────────────────────────────────────


@contextlib.contextmanager
def embedded_server(base: Path) -> Iterator[tuple[str, int | None, float]]:
    """A fresh embedded Milvus 2.3.5 standalone in ``base``; refuses when one is already running."""
    from tests.fixtures.milvus import EmbeddedMilvus

    running = milvus_servers()
    if running:
        raise RuntimeError(f"a Milvus server is already running (one per machine): {running}")
    server = EmbeddedMilvus(base)
    try:
        uri = server.start()
        yield uri, server.pid, server.startup_seconds or 0.0
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def table(results: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> str:
    lines = [
        "| vectors | backend / index | bulk rows/s | batch-32 rows/s | build s (+ load) | search p50/p95 ms "
        "| recall@10 | RSS MB before → after | RSS growth MB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(value: Any) -> str:
        return "–" if value is None else f"{value:,}" if isinstance(value, int) else str(value)

    for r in results:
        backend = f"{r['backend']} {r['index']}"
        if "error" in r:
            lines.append(f"| {r['vectors']:,} | {backend} | error: {r['error'][:80]} ||||||| ")
            continue
        s = r["search_batch32_fresh"]
        build = f"{r['build_s']} + {r['handoff_s']}" if "handoff_s" in r else cell(r.get("build_s"))
        rss = (
            f"{r['rss_before_mb']:.0f} → {r['rss_after_mb']:.0f}"
            if r.get("rss_after_mb") is not None
            else "–"
        )
        lines.append(
            f"| {r['vectors']:,} | {backend} | {cell(r.get('bulk_rows_per_s'))} | "
            f"{cell(r.get('batch_upsert_rows_per_s'))} | {build} | {s['p50_ms']} / {s['p95_ms']} | "
            f"{r['recall_at_10']} | {rss} | {cell(r.get('rss_growth_mb'))} |"
        )
    for s in skipped:
        lines.append(f"| {s['vectors']:,} | {s['backend']} {s['index']} | skipped: {s['reason']} ||||||| ")
    for key, m in memory(results).items():
        growth = ", ".join(f"{g:.0f} MB at {n:,}" for n, g in zip(m["vectors"], m["growth_mb"], strict=True))
        if m["reliable"]:
            figure = (
                f"{m.get('slope_mb_per_million', m['at_largest_mb_per_million']):,} MB per million vectors"
            )
        else:
            figure = "MB per million not determinable (largest size under 500k)"
        lines.append(f"\n{key}: {figure}; RSS growth {growth}")
    return "\n".join(lines)


def memory(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """MB per million vectors of each backend, from the RSS growth of its runs.

    ``slope``: the growth's slope between the two largest sizes, which cancels the fixed part
    (first search, caches, threads, allocator slack); ``at_largest``: growth / size at the largest.
    Only ``reliable`` when the largest size is at least 500k vectors: below that the server's RSS
    (Go heap, freed segments not yet returned) moves by hundreds of MB either way.
    """
    out: dict[str, dict[str, Any]] = {}
    by: dict[str, list[tuple[int, float]]] = {}
    for r in results:
        if r.get("rss_growth_mb") is not None:
            by.setdefault(f"{r['backend']} {r['index']}", []).append((r["vectors"], r["rss_growth_mb"]))
    for key, points in by.items():
        points.sort()
        n1, g1 = points[-1]
        entry: dict[str, Any] = {"vectors": [n for n, _ in points], "growth_mb": [g for _, g in points]}
        entry["at_largest_mb_per_million"] = round(g1 * 1_000_000 / n1)
        if len(points) > 1:
            n0, g0 = points[-2]
            entry["slope_mb_per_million"] = round((g1 - g0) * 1_000_000 / (n1 - n0))
        entry["reliable"] = n1 >= 500_000 and entry.get("slope_mb_per_million", 1) > 0
        out[key] = entry
    return out


def main() -> None:
    # SIGTERM as an exception, so the embedded server and the run's process are stopped on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--uri", action="append", default=[], help="a Milvus server to benchmark (repeatable)"
    )
    parser.add_argument("--no-lite", action="store_true", help="skip milvus-lite (FLAT)")
    parser.add_argument("--no-embedded", action="store_true", help="do not start the embedded server")
    parser.add_argument("-n", type=int, default=10_000, help="vectors, when --sizes is not given")
    parser.add_argument("--sizes", help="comma-separated vector counts, e.g. 10000,100000,1000000")
    parser.add_argument(
        "--index-types",
        default="FLAT,IVF_FLAT,HNSW",
        help="FLAT = milvus-lite; HNSW, IVF_FLAT = the Milvus server with that index (run in this order)",
    )
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32, help="the stream's batch: upsert and search")
    parser.add_argument("--bulk-batch", type=int, default=10_000, help="rows per bulk-load call")
    parser.add_argument("--bulk-via", choices=("upsert", "insert"), default="upsert")
    parser.add_argument("--extra", type=int, default=384, help="rows upserted in batches of --batch")
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per search latency figure")
    parser.add_argument("--recall-queries", type=int, default=320)
    parser.add_argument("--per-query", action="store_true", help="also time one search call per query")
    parser.add_argument(
        "--search-params",
        type=json.loads,
        default=None,
        help="server search params, e.g. '{\"nprobe\": 1024}'",
    )
    parser.add_argument("--build-timeout-s", type=float, default=1800)
    parser.add_argument("--settle-s", type=float, default=120, help="max wait for the server to go idle")
    parser.add_argument("--max-build-s", type=float, default=1500, help="skip runs predicted to take longer")
    parser.add_argument("--tmp", default=None, help="folder for milvus-lite files and server base dirs")
    parser.add_argument("--json-out", type=Path, help="the JSON report (rewritten after every run)")
    parser.add_argument(
        "--attach",
        metavar="COLLECTION",
        help="only measure search and recall on this existing bench collection at --uri "
        "(one --sizes value = its row count, one server --index-types value); nothing is loaded or dropped",
    )
    args = parser.parse_args()

    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [args.n]
    kinds = [k.strip().upper() for k in args.index_types.split(",") if k.strip()]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"--index-types: unknown {sorted(unknown)}; use {', '.join(KINDS)}")
    if args.no_lite:
        kinds = [k for k in kinds if k != "FLAT"]
    common = {
        "dim": args.dim,
        "batch": args.batch,
        "bulk_batch": args.bulk_batch,
        "bulk_via": args.bulk_via,
        "extra": args.extra,
        "repeat": args.repeat,
        "recall_queries": args.recall_queries,
        "per_query": args.per_query,
        "build_timeout_s": args.build_timeout_s,
        "settle_s": args.settle_s,
        "search_params": args.search_params,
    }
    results: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    started = time.monotonic()

    def report() -> dict[str, Any]:
        out = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "versions": _versions(),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "wall_s": round(time.monotonic() - started, 1),
            "results": results,
            "skipped": skipped,
            "memory_mb_per_million": memory(results),
        }
        if args.json_out:
            args.json_out.parent.mkdir(parents=True, exist_ok=True)
            args.json_out.write_text(json.dumps(out, indent=2) + "\n")
        return out

    if args.attach:
        if len(args.uri) != 1 or len(sizes) != 1 or len(kinds) != 1 or kinds[0] == "FLAT":
            parser.error("--attach needs one --uri, one --sizes value and one server --index-types value")
        spec = common | {"n": sizes[0], "kind": kinds[0], "uri": args.uri[0], "attach": args.attach}
        results.append(in_subprocess(spec) | {"note": f"attached to existing collection {args.attach}"})
        print(table(results, skipped))
        print()
        print(json.dumps(report(), indent=2))
        return
    seen: dict[tuple[str, str], tuple[int, float]] = {}  # (server, kind) -> (n, load_to_indexed_s)
    with tempfile.TemporaryDirectory(prefix="bench-index-", dir=args.tmp) as tmp:
        for n in sizes:
            for kind in kinds:
                targets: list[str | None] = []
                if kind == "FLAT":
                    targets = [None]
                else:
                    targets = list(args.uri) or ([] if args.no_embedded else ["embedded"])
                for target in targets:
                    backend = "milvus-lite" if target is None else "milvus-server"
                    key = (str(target), kind)
                    if key in seen and kind != "FLAT":
                        prev_n, prev_s = seen[key]
                        predicted = prev_s * n / prev_n
                        if predicted > args.max_build_s:
                            reason = (
                                f"load+index predicted {predicted:.0f}s (measured {prev_s:.0f}s at "
                                f"{prev_n:,}, scaled linearly) > --max-build-s {args.max_build_s:.0f}"
                            )
                            log(f"skip {backend} {kind} n={n}: {reason}")
                            skipped.append(
                                {"backend": backend, "index": kind, "vectors": n, "reason": reason}
                            )
                            continue
                    spec = common | {"n": n, "kind": kind}
                    try:
                        if target is None:
                            spec["uri"] = str(Path(tmp) / f"lite-{n}.db")
                            result = in_subprocess(spec)
                            shutil.rmtree(spec["uri"], ignore_errors=True)
                        elif target == "embedded":
                            base = Path(tmp) / f"milvus-{kind}-{n}"
                            with embedded_server(base) as (uri, pid, start_s):
                                log(f"embedded Milvus pid {pid} at {uri}, started in {start_s:.1f}s")
                                spec |= {"uri": uri, "server_pid": pid}
                                result = in_subprocess(spec) | {"server_start_s": round(start_s, 1)}
                        else:
                            spec["uri"] = target
                            result = in_subprocess(spec)
                    except Exception as exc:
                        log(f"{backend} {kind} n={n} failed: {exc!r}")
                        result = {"backend": backend, "index": kind, "vectors": n, "error": repr(exc)}
                    results.append(result)
                    report()
                    if "load_to_indexed_s" in result:
                        seen[key] = (n, result["load_to_indexed_s"])

    text = json.dumps(report(), indent=2)
    print(table(results, skipped))
    print()
    print(text)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("pymilvus", "milvus-lite", "milvus", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            out[package] = version(package)
    return out


if __name__ == "__main__":
    main()

"""Index benchmark: upsert rate and batched search latency, milvus-lite and a Milvus server.

    .venv/bin/python bench/index.py                       # milvus-lite + embedded server (package `milvus`)
    .venv/bin/python bench/index.py --uri http://host:19530 --no-lite

Stream-shaped work: 10k vectors (dim 512, 4 tenants) upserted in batches of 32; then batches of
32 queries, top_k 10, each query with its own ``before`` bound, compared with one call per query
(sequential and 8 threads). Results as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index import IndexRecord, MilvusStore

TENANTS = 4


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def timed(fn: Any, repeat: int) -> dict[str, float]:
    fn()  # warm-up
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 1),
        "p95_ms": round(samples[int(0.95 * (len(samples) - 1))], 1),
    }


def run(uri: str, *, n: int, dim: int, batch: int, repeat: int, flush: bool) -> dict[str, Any]:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri, timeout=60)
    name = f"bench_{uuid.uuid4().hex[:8]}"
    store = MilvusStore(client=client, collection=name, dim=dim, model_id="bench@1", timeout=60)
    out: dict[str, Any] = {"uri": uri, "vectors": n, "dim": dim}
    try:
        store.ensure_collection()
        out["index_type"] = store.index_type
        vectors = unit(n, dim, 0)
        tenants = [f"t{i % TENANTS}" for i in range(n)]
        records = [
            IndexRecord(tenant=tenants[i], image_id=f"img{i:06d}", ts=i * 10, vector=vectors[i])
            for i in range(n)
        ]
        started = time.perf_counter()
        for i in range(0, n, batch):
            store.upsert(records[i : i + batch])
        out["upsert_rows_per_s"] = round(n / (time.perf_counter() - started))
        if flush:  # a server seals and indexes segments in the background; force it to measure the index
            started = time.perf_counter()
            client.flush(name)
            out["flush_s"] = round(time.perf_counter() - started, 1)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                info = client.describe_index(name, "vector") or {}
                if int(info.get("indexed_rows", 0)) >= n or info.get("index_type") == "FLAT":
                    break
                time.sleep(0.5)
            out["indexed_s"] = round(time.perf_counter() - started, 1)

        rng = np.random.default_rng(1)
        picks = rng.integers(0, n, size=batch)
        queries = np.stack([vectors[p] + 0.05 * rng.normal(size=dim).astype(np.float32) for p in picks])
        q_tenants = [tenants[p] for p in picks]
        fresh = [
            (n * 10 + k, f"new{k:02d}") for k in range(batch)
        ]  # new events: everything indexed is earlier
        # A replayed batch: 32 consecutive indexed events, each may only see what came before it.
        window = range(n // 2, n // 2 + batch)
        replay_queries = np.stack(
            [vectors[p] + 0.05 * rng.normal(size=dim).astype(np.float32) for p in window]
        )
        replay_tenants = [tenants[p] for p in window]
        replay = [(p * 10, f"img{p:06d}") for p in window]

        def grouped() -> Any:
            return store.search(queries, tenants=q_tenants, before=fresh, top_k=10)

        def grouped_replay() -> Any:
            return store.search(replay_queries, tenants=replay_tenants, before=replay, top_k=10)

        def one(k: int) -> Any:
            return store.search(queries[k : k + 1], tenants=[q_tenants[k]], before=[fresh[k]], top_k=10)

        out["search_batch32_grouped"] = timed(grouped, repeat)
        out["search_batch32_grouped_replay"] = timed(grouped_replay, repeat)
        out["search_batch32_per_query_sequential"] = timed(
            lambda: [one(k) for k in range(batch)], max(3, repeat // 4)
        )
        with ThreadPoolExecutor(8) as pool:
            out["search_batch32_per_query_8_threads"] = timed(
                lambda: list(pool.map(one, range(batch))), max(3, repeat // 4)
            )
    finally:
        store.close()
        client.drop_collection(name)
        client.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--uri", action="append", default=[], help="a Milvus server to benchmark (repeatable)"
    )
    parser.add_argument("--no-lite", action="store_true", help="skip milvus-lite")
    parser.add_argument("--no-embedded", action="store_true", help="do not start the embedded server")
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    kw = {"n": args.n, "dim": args.dim, "batch": args.batch, "repeat": args.repeat}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_lite:
            results.append(run(str(Path(tmp) / "bench.db"), flush=False, **kw))
        for uri in args.uri:
            results.append(run(uri, flush=True, **kw))
        if not args.no_embedded and not args.uri:
            from tests.fixtures.milvus import EmbeddedMilvus

            server = EmbeddedMilvus(Path(tmp) / "milvus")
            try:
                uri = server.start()
                results.append({"embedded_server_start_s": round(server.startup_seconds or 0, 1)})
                results.append(run(uri, flush=False, **kw) | {"note": "growing segment, before flush"})
                results.append(run(uri, flush=True, **kw) | {"note": "after flush"})
            finally:
                server.stop()
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()

"""The dedup pipeline for one micro-batch, independent of Kafka.

``prepare``: parse -> fetch/decode/hash/preprocess (thread pool) -> exact-copy lookup by hash.
``encode``: the model, one call. ``commit``: one batched index search (whose hits also reveal
exact copies indexed since the lookup) -> compare within the batch -> decide in (timestamp, id)
order -> upsert -> one outgoing record per input message, in input order. The worker runs the three
stages of consecutive batches at once (k+2 prepares, k+1 encodes, k commits); commits run one at
a time, in order.

Only images strictly earlier in (timestamp, id) order are ever candidates, so a redelivered event
never matches itself and a replay after a crash gives the same decision as the first run.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from encoders import DecodeError, Encoder
from encoders.decode import content_hash, decode_image, pixel_hash
from index import IndexRecord, MilvusStore
from streams.decide import Candidate, ThresholdBook, canonical_of, classify, verdict_of
from streams.errors import EventError, FetchError
from streams.events import DeleteEvent, ImageEvent, InboundMessage, parse_event
from streams.fetch import Fetcher
from streams.metrics import WorkerMetrics

__all__ = ["DedupPipeline", "Outgoing", "PipelineConfig", "PreparedBatch"]

logger = logging.getLogger(__name__)

DEAD_LETTER_INLINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class PipelineConfig:
    """Behaviour of the pipeline; the CLI builds it from flags and environment."""

    thresholds: ThresholdBook
    top_k: int = 5
    default_tenant: str = "default"
    max_message_bytes: int = 16 * 1024 * 1024
    max_image_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 40_000_000
    decode_threads: int = 4
    draft: bool = True
    recheck: bool = False  # search again after upserting: needed when several workers share an index


@dataclass(frozen=True)
class Outgoing:
    """One record to produce: a decision or a dead letter."""

    kind: str  # "decision" | "dead_letter"
    key: bytes | None
    value: dict[str, Any]


@dataclass
class _Work:
    """Per-image state while a batch moves through the stages."""

    position: int
    event: ImageEvent
    content_hash: str = ""
    pixel_hash: str = ""
    prepared: np.ndarray | None = None
    vector: np.ndarray | None = None
    exact_of: Candidate | None = None
    candidates: list[Candidate] = field(default_factory=list)
    canonical_id: str = ""
    error: Exception | None = None

    def record(self) -> IndexRecord:
        """What the index stores for this (encoded) image."""
        assert self.vector is not None  # only encoded images are stored
        return IndexRecord(
            tenant=self.event.tenant,
            image_id=self.event.id,
            ts=self.event.timestamp_ms,
            vector=self.vector,
            content_hash=self.content_hash,
            pixel_hash=self.pixel_hash,
            canonical_id=self.canonical_id,
        )


@dataclass
class PreparedBatch:
    """A batch between :meth:`DedupPipeline.prepare` and :meth:`DedupPipeline.commit`."""

    messages: list[InboundMessage]
    started: float
    outgoing: list[Outgoing | None] = field(default_factory=list)
    live: list[_Work] = field(default_factory=list)
    repeats: list[tuple[_Work, _Work]] = field(default_factory=list)
    deletes: list[tuple[int, DeleteEvent]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


class DedupPipeline:
    """Decides batches of messages with one encoder and one index store."""

    def __init__(
        self,
        *,
        encoder: Encoder,
        store: MilvusStore,
        fetcher: Fetcher,
        config: PipelineConfig,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.encoder = encoder
        self.store = store
        self.fetcher = fetcher
        self.config = config
        self.metrics = metrics or WorkerMetrics()
        self._decode_pool = ThreadPoolExecutor(max_workers=config.decode_threads, thread_name_prefix="decode")
        self._model_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._index_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index")
        # prepare()'s hash lookups get their own thread: queued behind the previous batch's
        # search and upsert they would hold the model back (measured: ~30% idle on 2 cores).
        self._lookup_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lookup")

    def close(self) -> None:
        for pool in (self._decode_pool, self._model_pool, self._index_pool, self._lookup_pool):
            pool.shutdown(wait=True, cancel_futures=True)
        self.fetcher.close()

    # --- stages -------------------------------------------------------------

    def _load(self, work: _Work) -> None:
        """Fetch, hash, decode and prepare one image (runs in the decode pool)."""
        event = work.event
        try:
            data = event.data if event.data is not None else self.fetcher.fetch(event.uri or "")
            work.content_hash = content_hash(data)
            image = decode_image(
                data,
                max_bytes=self.config.max_image_bytes,
                max_pixels=self.config.max_pixels,
                draft_size=self.encoder.draft_size if self.config.draft else None,
            )
            work.pixel_hash = pixel_hash(image)
            work.prepared = self.encoder.prepare(image)
        except (FetchError, DecodeError) as exc:
            work.error = exc

    async def _in(self, pool: ThreadPoolExecutor, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def process(self, messages: Sequence[InboundMessage]) -> list[Outgoing]:
        """Decide a batch; returns one :class:`Outgoing` per message, in input order.

        Raises a retriable error (e.g. the index is unavailable) without side effects that a
        retry of the same batch would not repeat identically.
        """
        return await self.commit(await self.encode(await self.prepare(messages)))

    async def prepare(self, messages: Sequence[InboundMessage]) -> PreparedBatch:
        """The first stage of a batch: parse, fetch/decode/preprocess, exact-copy lookup.

        Safe to run while earlier batches encode and commit: it only reads the index, and
        :meth:`commit` catches exact copies of those batches among its search hits.
        """
        started = time.perf_counter()
        batch = PreparedBatch(messages=list(messages), started=started, outgoing=[None] * len(messages))
        outgoing, timings = batch.outgoing, batch.timings
        images: list[_Work] = []
        for position, message in enumerate(messages):
            try:
                event = parse_event(
                    message,
                    default_tenant=self.config.default_tenant,
                    max_message_bytes=self.config.max_message_bytes,
                )
            except EventError as exc:
                outgoing[position] = self._dead_letter(message, exc, stage="parse")
                continue
            if isinstance(event, DeleteEvent):
                batch.deletes.append((position, event))
            else:
                images.append(_Work(position=position, event=event))

        t0 = time.perf_counter()
        await asyncio.gather(*(self._in(self._decode_pool, self._load, work) for work in images))
        timings["fetch_decode"] = time.perf_counter() - t0
        for work in images:
            if work.error is not None:
                message = messages[work.position]
                outgoing[work.position] = self._dead_letter(
                    message, work.error, stage="load", event_id=work.event.id
                )
        live = [w for w in images if w.error is None]

        # Same id twice in one batch (a redelivery): decide once, answer both the same way.
        unique_live: dict[tuple[str, str, tuple[int, str]], _Work] = {}
        for work in live:
            key = (work.event.tenant, work.event.id, work.event.order_key)
            if key in unique_live:
                batch.repeats.append((work, unique_live[key]))
            else:
                unique_live[key] = work
        batch.live = sorted(unique_live.values(), key=lambda w: (w.event.tenant, w.event.order_key))

        t0 = time.perf_counter()
        await self._find_exact(batch.live)  # copies found here skip the model
        timings["exact_lookup"] = time.perf_counter() - t0
        timings["prepare"] = time.perf_counter() - started
        return batch

    async def encode(self, batch: PreparedBatch) -> PreparedBatch:
        """Run the model on the batch's images that are not exact copies (one call)."""
        to_encode = [w for w in batch.live if w.exact_of is None and w.vector is None]
        t0 = time.perf_counter()
        if to_encode:
            stacked = np.stack([w.prepared for w in to_encode if w.prepared is not None])
            vectors = await self._in(self._model_pool, self.encoder.embed_prepared, stacked)
            for work, vector in zip(to_encode, vectors, strict=True):
                work.vector = vector
                work.prepared = None  # the pixels are not needed any more
        batch.timings["encode"] = time.perf_counter() - t0
        return batch

    async def commit(self, batch: PreparedBatch) -> list[Outgoing]:
        """The index's half of a batch: search, decide, upsert; batches must commit in order.

        A retry after a retriable error repeats it from the start with the same result.
        """
        started = time.perf_counter()
        messages, timings = batch.messages, batch.timings
        outgoing = list(batch.outgoing)
        live = batch.live

        searched = [w for w in live if w.exact_of is None]
        t0 = time.perf_counter()
        await self._search(searched)  # also finds exact copies committed since prepare() looked
        timings["search"] = time.perf_counter() - t0
        stored = [w for w in searched if w.exact_of is None]

        decided = self._decide(live)

        t0 = time.perf_counter()
        records = [w.record() for w in stored if w.vector is not None]
        if records:
            await self._in(self._index_pool, self.store.upsert, records)
        for position, delete in batch.deletes:
            removed = await self._in(
                self._index_pool, lambda d=delete: self.store.delete([d.id], tenant=d.tenant)
            )
            outgoing[position] = Outgoing(
                "decision",
                messages[position].key,
                {
                    "id": delete.id,
                    "tenant": delete.tenant,
                    "op": "delete",
                    "verdict": "deleted",
                    "deleted": int(removed),
                    "source": delete.source.to_dict(),
                    "metadata": delete.metadata,
                },
            )
            self.metrics.decisions.labels("deleted").inc()
        timings["upsert"] = time.perf_counter() - t0
        corrections: list[Outgoing] = []
        if self.config.recheck and stored:
            t0 = time.perf_counter()
            corrections = await self._recheck(stored, {(w.event.tenant, w.event.id) for w in live})
            timings["recheck"] = time.perf_counter() - t0
        timings["commit"] = time.perf_counter() - started
        timings["batch"] = time.perf_counter() - batch.started

        timings_ms = {stage: round(seconds * 1000, 3) for stage, seconds in timings.items()}
        for work, payload in decided:
            payload["timings_ms"] = timings_ms
            outgoing[work.position] = Outgoing("decision", messages[work.position].key, payload)
        for repeat, first in batch.repeats:
            first_payload = outgoing[first.position]
            assert first_payload is not None
            payload = dict(first_payload.value, source=repeat.event.source.to_dict())
            outgoing[repeat.position] = Outgoing("decision", messages[repeat.position].key, payload)

        for stage in ("fetch_decode", "encode", "search", "upsert", "prepare", "commit", "batch"):
            self.metrics.stage_seconds.labels(stage).observe(timings[stage])
        self.metrics.batch_size.observe(len(messages))
        return [item for item in outgoing if item is not None] + corrections

    async def _find_exact(self, live: list[_Work]) -> None:
        """Mark byte- or pixel-identical copies of earlier images, in the index or in the batch."""
        if not live:
            return
        by_tenant: dict[str, list[_Work]] = {}
        for work in live:
            by_tenant.setdefault(work.event.tenant, []).append(work)
        for tenant, works in by_tenant.items():
            hashes = sorted({h for w in works for h in (w.content_hash, w.pixel_hash) if h})
            found = await self._in(
                self._lookup_pool, lambda t=tenant, h=hashes: self.store.find_by_hash(h, tenant=t)
            )
            first_in_batch: dict[str, _Work] = {}
            for work in works:  # sorted by order key
                for digest in (work.content_hash, work.pixel_hash):
                    record = found.get(digest)
                    if (
                        record is not None
                        and (record.ts, record.image_id) < work.event.order_key
                        and record.image_id != work.event.id
                    ):
                        work.exact_of = Candidate(
                            record.image_id,
                            1.0,
                            record.canonical_id or record.image_id,
                            (record.ts, record.image_id),
                            exact=True,
                        )
                        break
                    earlier = first_in_batch.get(digest)
                    if earlier is not None and earlier.event.id != work.event.id:
                        work.exact_of = Candidate(
                            earlier.event.id, 1.0, "", earlier.event.order_key, exact=True
                        )
                        break
                for digest in (work.content_hash, work.pixel_hash):
                    first_in_batch.setdefault(digest, work)
                if work.exact_of is not None:
                    self.metrics.exact_matches.inc()

    async def _search(self, works: list[_Work]) -> None:
        if not works:
            return
        vectors = np.stack([w.vector for w in works if w.vector is not None])
        results = await self._in(
            self._index_pool,
            lambda: self.store.search(
                vectors,
                tenants=[w.event.tenant for w in works],
                before=[w.event.order_key for w in works],
                top_k=self.config.top_k + 1,
            ),
        )
        for work, matches in zip(works, results, strict=True):
            work.candidates = [
                Candidate(m.image_id, float(m.score), m.canonical_id or m.image_id, (m.ts, m.image_id))
                for m in matches
                if m.image_id != work.event.id
            ]
            # A byte- or pixel-identical earlier image has the same vector, so it is among the
            # hits: an exact copy of an image indexed after prepare() looked the hashes up.
            identical = [
                m
                for m in matches
                if m.image_id != work.event.id
                and (
                    (m.content_hash and m.content_hash == work.content_hash)
                    or (m.pixel_hash and m.pixel_hash == work.pixel_hash)
                )
            ]
            if identical:
                first = min(identical, key=lambda m: m.order_key)
                work.exact_of = Candidate(
                    first.image_id, 1.0, first.canonical_id or first.image_id, first.order_key, exact=True
                )
                self.metrics.exact_matches.inc()
        # Images earlier in the same batch are not in the index yet: compare them directly.
        scores = vectors @ vectors.T
        for i, work in enumerate(works):
            for j, other in enumerate(works):
                if (
                    other.event.tenant == work.event.tenant
                    and other.event.order_key < work.event.order_key
                    and other.event.id != work.event.id
                ):
                    work.candidates.append(
                        Candidate(other.event.id, float(scores[i, j]), "", other.event.order_key)
                    )

    async def _recheck(self, works: list[_Work], in_batch: set[tuple[str, str]]) -> list[Outgoing]:
        """After the upsert, catch duplicates that another worker wrote concurrently.

        Two workers can decide an original and its copy at the same moment, each before the
        other's upsert is visible, and both call their image unique. Each worker searches again
        after its own upsert, in both directions: whichever worker upserted second sees the
        other's image, so at least one of them finds the pair. The later image of the pair (by
        timestamp, then id) gets a correction decision (``"correction": true``) and its stored
        canonical id is updated. Both workers compute the same correction from the same index.
        """
        vectors = np.stack([w.vector for w in works if w.vector is not None])
        results = await self._in(
            self._index_pool,
            lambda: self.store.search(
                vectors, tenants=[w.event.tenant for w in works], top_k=self.config.top_k + 1
            ),
        )
        corrections: dict[tuple[str, str], Outgoing] = {}
        updates: list[IndexRecord] = []
        for work, matches in zip(works, results, strict=True):
            event = work.event
            thresholds = self.config.thresholds.for_tenant(event.tenant)
            for match in matches:
                if match.image_id == event.id or (event.tenant, match.image_id) in in_batch:
                    continue
                if match.score < thresholds.duplicate:
                    break  # best first
                if match.order_key < event.order_key and work.canonical_id == event.id:
                    # an earlier duplicate that was not visible when this image was decided
                    canonical = match.canonical_id or match.image_id
                    target, target_ts, source = event.id, event.timestamp_ms, event.source.to_dict()
                    work.canonical_id = canonical
                    updates.append(work.record())
                    matched_id = match.image_id
                elif match.order_key > event.order_key and match.canonical_id in ("", match.image_id):
                    # a later image that took itself for an original
                    stored = await self._in(
                        self._index_pool, lambda m=match: self.store.get([m.image_id], tenant=m.tenant)
                    )
                    record = stored.get(match.image_id)
                    if record is None:
                        continue
                    canonical = work.canonical_id
                    target, target_ts, source = match.image_id, match.ts, None
                    updates.append(dataclasses.replace(record, canonical_id=canonical))
                    matched_id = event.id
                else:
                    continue
                corrections[(event.tenant, target)] = Outgoing(
                    "decision",
                    target.encode(),
                    {
                        "id": target,
                        "tenant": event.tenant,
                        "verdict": "duplicate",
                        "correction": True,
                        "matches": [
                            {
                                "id": matched_id,
                                "score": round(float(match.score), 6),
                                "verdict": "duplicate",
                                "exact": False,
                            }
                        ],
                        "canonical_id": canonical,
                        "model": self.encoder.info.model_id,
                        "thresholds": thresholds.to_dict(),
                        "timestamp": target_ts,
                        "source": source,
                        "metadata": {},
                    },
                )
                break
        if updates:
            await self._in(self._index_pool, self.store.upsert, updates)
        for _ in corrections:
            self.metrics.corrections.inc()
        if corrections:
            logger.info("emitting %d correction(s) for concurrent duplicates", len(corrections))
        return list(corrections.values())

    def _decide(self, live: list[_Work]) -> list[tuple[_Work, dict[str, Any]]]:
        """Verdicts in (tenant, timestamp, id) order so batch peers' canonical ids are known."""
        canonical: dict[tuple[str, str], str] = {}
        out = []
        for work in live:
            event = work.event
            thresholds = self.config.thresholds.for_tenant(event.tenant)
            candidates = [work.exact_of] if work.exact_of is not None else work.candidates
            candidates = [
                c
                if c.canonical_id
                else Candidate(c.id, c.score, canonical.get((event.tenant, c.id), c.id), c.order_key, c.exact)
                for c in candidates
            ]
            verdict, matches = classify(candidates, thresholds, top_k=self.config.top_k)
            work.canonical_id = canonical_of(event.id, verdict, matches)
            canonical[(event.tenant, event.id)] = work.canonical_id
            best = max((c.score for c in candidates), default=0.0)
            self.metrics.top1_score.observe(max(0.0, best))
            self.metrics.decisions.labels(verdict).inc()
            out.append(
                (
                    work,
                    {
                        "id": event.id,
                        "tenant": event.tenant,
                        "verdict": verdict,
                        "matches": [
                            {
                                "id": m.id,
                                "score": round(m.score, 6),
                                "verdict": "duplicate" if m.exact else verdict_of(m.score, thresholds),
                                "exact": m.exact,
                            }
                            for m in matches
                        ],
                        "canonical_id": work.canonical_id,
                        "model": self.encoder.info.model_id,
                        "thresholds": thresholds.to_dict(),
                        "timestamp": event.timestamp_ms,
                        "source": event.source.to_dict(),
                        "metadata": event.metadata,
                    },
                )
            )
        return out

    def _dead_letter(
        self, message: InboundMessage, error: Exception, *, stage: str, event_id: str | None = None
    ) -> Outgoing:
        reason = getattr(error, "reason", "other")
        self.metrics.dead_letter(reason)
        logger.warning("dead letter %s reason=%s: %s", message.source, reason, error)
        value: dict[str, Any] = {
            "reason": reason,
            "message": str(error)[:1000],
            "stage": stage,
            "id": event_id,
            "source": message.source.to_dict(),
            "timestamp": message.timestamp_ms,
            "key": _b64(message.key),
        }
        raw = message.value
        if raw is not None and len(raw) <= DEAD_LETTER_INLINE_BYTES:
            value["value"] = _b64(raw)
        elif raw is not None:
            value["value"] = None
            value["value_ref"] = {
                "size_bytes": len(raw),
                "sha256": hashlib.sha256(raw).hexdigest(),
                **message.source.to_dict(),
            }
        return Outgoing("dead_letter", message.key, value)


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")

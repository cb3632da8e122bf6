"""The faust application: one agent that micro-batches image events through the pipeline.

Delivery: at least once. Every message is held (an extra reference) until every decision and dead
letter of its batch is acknowledged by the broker, so a committed offset always has its decision
downstream. Batch k+2 is decoded while batch k+1 is encoded and batch k is searched, upserted
and produced.
A retriable backend failure (Milvus down) is retried with back-off on the same batch; the batch is
never acked half-done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import faust
from faust.types import StreamT, TopicT
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from encoders.errors import DupstreamError
from streams.events import InboundMessage, Source
from streams.metrics import WorkerMetrics
from streams.pipeline import DedupPipeline, Outgoing, PreparedBatch
from streams.settings import WorkerSettings

__all__ = ["build_app"]

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
MAX_IN_FLIGHT = 3  # batches: one loading, one encoding, one committing

T = TypeVar("T")


def _to_inbound(event: Any) -> InboundMessage:
    message = event.message
    return InboundMessage(
        key=message.key,
        value=message.value,
        source=Source(message.topic, message.partition, message.offset),
        timestamp_ms=int(message.timestamp * 1000) if message.timestamp else int(time.time() * 1000),
    )


@dataclass(eq=False)
class _Flight:
    """A batch on its way through the agent."""

    stream: StreamT
    events: list[Any]
    batch: list[InboundMessage]
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    encoded: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Future[None] = field(init=False)


def _internal_error_letters(batch: list[InboundMessage], error: Exception) -> list[Outgoing]:
    """Last resort for a bug: dead-letter the batch with its payloads rather than crash-loop."""
    import base64

    return [
        Outgoing(
            "dead_letter",
            m.key,
            {
                "reason": "internal_error",
                "message": f"{type(error).__name__}: {error}"[:1000],
                "stage": "pipeline",
                "id": None,
                "source": m.source.to_dict(),
                "timestamp": m.timestamp_ms,
                "key": None if m.key is None else base64.b64encode(m.key).decode(),
                "value": None
                if m.value is None or len(m.value) > 65536
                else base64.b64encode(m.value).decode(),
            },
        )
        for m in batch
    ]


def build_app(settings: WorkerSettings, pipeline: DedupPipeline, metrics: WorkerMetrics) -> faust.App:
    """A faust app wired to ``pipeline``; run it with ``faust.Worker(app).execute_from_commandline()``."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    app = faust.App(
        settings.group,
        broker=[f"kafka://{hostport}" for hostport in settings.broker.split(",")],
        store="memory://",
        datadir=str(settings.data_dir / "{conf.name}-data"),
        autodiscover=False,
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.partitions,
        topic_allow_declare=False,
        producer_acks=-1,
        producer_max_request_size=max(settings.max_message_bytes * 2, 1_048_576),
        stream_buffer_maxsize=max(settings.batch_size * 4, 64),
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 5),
        broker_rebalance_timeout=max(settings.session_timeout_s, 30.0),
        web_in_thread=False,
    )

    def raw_topic(name: str) -> TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    source = raw_topic(settings.input_topic)
    decisions = raw_topic(settings.decisions_topic)
    dead_letters = raw_topic(settings.dead_letter_topic)
    state: dict[str, Any] = {"last_ok": None, "last_error": None}

    async def emit(records: list[Outgoing]) -> None:
        futures = []
        for record in records:
            topic = decisions if record.kind == "decision" else dead_letters
            payload = json.dumps(record.value, separators=(",", ":"), ensure_ascii=False).encode()
            futures.append(await topic.send(key=record.key, value=payload))
        started = time.perf_counter()
        await asyncio.gather(*futures)
        metrics.stage_seconds.labels("produce").observe(time.perf_counter() - started)

    async def with_retries(batch: list[InboundMessage], step: Callable[[], Awaitable[T]]) -> T:
        """Run one pipeline step, retrying retriable backend failures with back-off."""
        delay = 0.5
        while True:
            try:
                return await step()
            except DupstreamError as exc:
                if not exc.retriable:
                    raise
                metrics.retries.labels("index").inc()
                state["last_error"] = f"{exc.reason}: {exc}"
                metrics.last_batch_ok.set(0)
                logger.warning(
                    "retriable failure on %s..%s (%s); retrying in %.1fs",
                    batch[0].source,
                    batch[-1].source,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)

    async def fly(flight: _Flight, previous: _Flight | None) -> None:
        """One batch through load, encode and commit, each stage after the previous batch's."""
        batch = flight.batch
        prepared: PreparedBatch | Exception
        try:
            try:
                prepared = await with_retries(batch, lambda: pipeline.prepare(batch))
            finally:
                flight.loaded.set()
            if previous is not None:
                await previous.encoded.wait()  # one batch on the model at a time, in order
            prepared = await pipeline.encode(prepared)
        except Exception as exc:  # a bug: commit() dead-letters the batch
            logger.exception("prepare/encode failed on %s..%s", batch[0].source, batch[-1].source)
            prepared = exc
        finally:
            flight.encoded.set()
        if previous is not None:
            await asyncio.wait([previous.task])  # commits run one at a time, in offset order
        await commit(flight, prepared)

    async def commit(flight: _Flight, prepared: PreparedBatch | Exception) -> None:
        batch = flight.batch
        try:
            if isinstance(prepared, Exception):
                raise prepared
            ready = prepared
            outgoing = await with_retries(batch, lambda: pipeline.commit(ready))
        except Exception as exc:  # a bug: keep every event, as a dead letter, and go on
            logger.exception(
                "pipeline failed on %s..%s; dead-lettering the batch", batch[0].source, batch[-1].source
            )
            outgoing = _internal_error_letters(batch, exc)
        await emit(outgoing)
        for event in flight.events:  # the hold taken in the agent: now the offsets may be committed
            await flight.stream.ack(event)
        state["last_ok"] = time.time()
        state["last_error"] = None
        metrics.last_batch_ok.set(1)
        metrics.last_batch_timestamp.set(state["last_ok"])
        logger.debug("decided %s..%s (%d events)", batch[0].source, batch[-1].source, len(batch))

    @app.agent(source)
    async def dedup(stream: StreamT) -> None:
        """Three batches in flight: k+2 loads (fetch, decode), k+1 encodes, k commits.

        ``take_events`` acks a batch as soon as the next one is asked for, so each message is held
        (an extra reference) until its own commit has produced every decision: only then can its
        offset be committed. Encodes run one at a time and commits one at a time, in order.
        """
        take_events = stream.take_events  # type: ignore[attr-defined]  # faust-streaming, not in StreamT
        flights: list[_Flight] = []
        try:
            async for taken in take_events(settings.batch_size, within=settings.batch_wait_s):
                events = list(taken)
                for event in events:
                    event.message.incref()
                flight = _Flight(stream, events, [_to_inbound(event) for event in events])
                flight.task = asyncio.ensure_future(fly(flight, flights[-1] if flights else None))
                flights = [f for f in flights if not f.task.done()] + [flight]
                await asyncio.shield(flight.loaded.wait())  # next batch while this one encodes
                if len(flights) > MAX_IN_FLIGHT:
                    await asyncio.shield(asyncio.wait([flights[0].task]))
        except asyncio.CancelledError:
            # faust stops agents by cancelling them: finish the batches in flight so their
            # decisions are produced and their offsets committed, then stop.
            pending = [f.task for f in flights if not f.task.done()]
            if pending:
                logger.info("stopping: finishing the %d batch(es) in flight", len(pending))
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.wait(pending), timeout=settings.shutdown_grace_s)
            raise

    @app.timer(interval=5.0)
    async def refresh_gauges() -> None:
        try:
            count = await asyncio.get_running_loop().run_in_executor(None, pipeline.store.count)
            metrics.index_size.set(count)
        except Exception as exc:
            logger.debug("index count failed: %s", exc)
        consumer = app.consumer
        for tp in consumer.assignment():
            if tp.topic != settings.input_topic:
                continue
            try:
                highwater = consumer.highwater(tp)
                position = await consumer.position(tp)
            except Exception:  # noqa: S112 - partition moving during a rebalance
                continue
            if highwater is not None and position is not None:
                metrics.consumer_lag.labels(str(tp.partition)).set(max(0, highwater - position))

    @app.page("/metrics")
    async def metrics_page(self: View, request: Request) -> Response:
        return self.bytes(generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/healthz")
    async def healthz(self: View, request: Request) -> Response:
        return self.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(self: View, request: Request) -> Response:
        problems = []
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(None, pipeline.store.count), timeout=3.0
            )
        except Exception as exc:
            problems.append(f"index: {type(exc).__name__}")
        if not app.consumer.assignment():
            problems.append("kafka: no partitions assigned yet")
        if state["last_error"]:
            problems.append(f"last batch: {state['last_error']}")
        body = {"ready": not problems, "problems": problems, "last_batch_ok_at": state["last_ok"]}
        return self.json(body, status=200 if not problems else 503)

    return app

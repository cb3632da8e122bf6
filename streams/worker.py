"""Start a worker process: topics, pipeline, faust app, run until stopped."""

from __future__ import annotations

import asyncio
import logging

import faust
from threadpoolctl import threadpool_limits

from streams.app import build_app
from streams.metrics import WorkerMetrics
from streams.settings import WorkerSettings
from streams.topics import ensure_topics
from streams.wiring import build_pipeline

__all__ = ["run_worker"]

logger = logging.getLogger(__name__)


def run_worker(settings: WorkerSettings) -> None:
    """Block running the worker; returns after SIGTERM/SIGINT once the worker has stopped."""
    if settings.create_topics:
        asyncio.run(
            ensure_topics(
                settings.broker,
                [settings.input_topic, settings.decisions_topic, settings.dead_letter_topic],
                partitions=settings.partitions,
            )
        )
    asyncio.set_event_loop(asyncio.new_event_loop())
    # OpenBLAS's worker threads spin-wait; beside onnxruntime's pool and the decode threads they
    # make milvus-lite's small in-process matrix products far slower than one thread does.
    threadpool_limits(limits=settings.blas_threads, user_api="blas")
    metrics = WorkerMetrics()
    pipeline = build_pipeline(settings, metrics=metrics)
    logger.info(
        "worker %s: model %s, index %s, %s -> %s",
        settings.group,
        pipeline.encoder.info.model_id,
        settings.index,
        settings.input_topic,
        settings.decisions_topic,
    )
    app = build_app(settings, pipeline, metrics)
    worker = faust.Worker(
        app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False, override_logging=False
    )
    try:
        worker.execute_from_commandline()
    finally:
        pipeline.close()

"""Build the encoder, index store, fetcher and pipeline from settings (one place, used by every command)."""

from __future__ import annotations

import encoders
from index import MilvusStore
from streams.fetch import Fetcher, FetchPolicy
from streams.metrics import WorkerMetrics
from streams.pipeline import DedupPipeline, PipelineConfig
from streams.settings import WorkerSettings

__all__ = ["build_pipeline"]


def build_pipeline(settings: WorkerSettings, *, metrics: WorkerMetrics | None = None) -> DedupPipeline:
    encoder = encoders.create(settings.model, device=settings.device)
    store = MilvusStore(
        uri=settings.index,
        collection=settings.collection,
        dim=encoder.dim,
        model_id=encoder.info.model_id,
        token=settings.index_token.get_secret_value() if settings.index_token else None,
    )
    store.ensure_collection()
    fetcher = Fetcher(
        FetchPolicy(
            allow_roots=settings.allow_roots,
            allow_http=settings.allow_http,
            allow_hosts=settings.allow_hosts,
            allow_private_networks=settings.allow_private_networks,
            timeout_s=settings.fetch_timeout_s,
            max_bytes=settings.max_image_bytes,
        )
    )
    config = PipelineConfig(
        thresholds=settings.threshold_book(),
        top_k=settings.top_k,
        default_tenant=settings.default_tenant,
        max_message_bytes=settings.max_message_bytes,
        max_image_bytes=settings.max_image_bytes,
        max_pixels=settings.max_pixels,
        decode_threads=settings.decode_threads,
        recheck=settings.recheck_enabled,
    )
    return DedupPipeline(encoder=encoder, store=store, fetcher=fetcher, config=config, metrics=metrics)

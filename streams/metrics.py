"""Prometheus metrics of a worker, on an injectable registry (tests pass a fresh one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["STAGES", "VERDICTS", "WorkerMetrics"]

VERDICTS = ("duplicate", "similar", "unique", "deleted")
STAGES = ("fetch_decode", "encode", "prepare", "search", "upsert", "commit", "produce", "batch")
DEAD_LETTER_REASONS = (
    "invalid_json",
    "not_an_object",
    "missing_id",
    "bad_id",
    "unknown_field",
    "no_image",
    "both_uri_and_data",
    "bad_base64",
    "empty",
    "message_too_large",
    "not_an_image",
    "truncated",
    "too_large",
    "too_many_pixels",
    "unsupported_format",
    "bad_dimensions",
    "corrupt",
    "path_not_allowed",
    "not_found",
    "http_disabled",
    "unsupported_scheme",
    "other",
)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class WorkerMetrics:
    """All worker metrics, named ``dupstream_<subsystem>_<what>_<unit>``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "dupstream_decisions_total", "Decisions emitted, by verdict.", ["verdict"], registry=r
        )
        self.corrections = Counter(
            "dupstream_corrections_total",
            "Correction decisions emitted after a concurrent upsert.",
            registry=r,
        )
        self.exact_matches = Counter(
            "dupstream_exact_matches_total",
            "Images decided by content hash without running the model.",
            registry=r,
        )
        self.dead_letters = Counter(
            "dupstream_dead_letters_total", "Events sent to the dead-letter topic.", ["reason"], registry=r
        )
        self.stage_seconds = Histogram(
            "dupstream_stage_duration_seconds",
            "Time per batch in each stage.",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "dupstream_batch_size_events",
            "Events per micro-batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.top1_score = Histogram(
            "dupstream_top1_similarity_score",
            "Best match score per decided image.",
            buckets=(0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0),
            registry=r,
        )
        self.index_size = Gauge("dupstream_index_vectors", "Vectors in the index collection.", registry=r)
        self.consumer_lag = Gauge(
            "dupstream_consumer_lag_messages",
            "Messages behind the end of the input topic.",
            ["partition"],
            registry=r,
        )
        self.retries = Counter(
            "dupstream_backend_retries_total",
            "Retries of a retriable backend failure.",
            ["backend"],
            registry=r,
        )
        self.last_batch_ok = Gauge("dupstream_last_batch_ok", "1 when the last batch completed.", registry=r)
        self.last_batch_timestamp = Gauge(
            "dupstream_last_batch_timestamp_seconds", "Unix time the last batch completed.", registry=r
        )
        for verdict in VERDICTS:
            self.decisions.labels(verdict)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)
        for stage in STAGES:
            self.stage_seconds.labels(stage)
        for backend in ("index", "kafka"):
            self.retries.labels(backend)

    def dead_letter(self, reason: str) -> None:
        label = reason if reason in DEAD_LETTER_REASONS else "other"
        self.dead_letters.labels(label).inc()

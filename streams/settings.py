"""Worker settings: typed, frozen, read from ``DUPSTREAM_*`` environment variables by the CLI."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.decide import ThresholdBook, Thresholds

__all__ = ["DEFAULT_THRESHOLDS", "WorkerSettings", "default_thresholds"]

# Per-encoder (duplicate, similar) cosine thresholds, calibrated on the calibration split of the
# copy-detection benchmark (docs/quality.md): duplicate = midway between precision >= 0.99 and 95%
# recall of L1+L2 copies; similar = precision >= 0.90.
DEFAULT_THRESHOLDS: dict[str, tuple[float, float]] = {
    "sscd": (0.57, 0.26),
    "sscd-mini": (0.55, 0.35),  # at its default 224 px input
    "efficientnet-lite0": (0.80, 0.70),
    "phash": (0.6875, 0.5625),  # IP of ±1/8 vectors: 0.6875 = hamming 10 of 64
    "test-tiny": (0.99, 0.95),
}
FALLBACK_THRESHOLDS = (0.90, 0.75)


def default_thresholds(model: str) -> Thresholds:
    duplicate, similar = DEFAULT_THRESHOLDS.get(model, FALLBACK_THRESHOLDS)
    return Thresholds(duplicate=duplicate, similar=similar)


class WorkerSettings(BaseSettings):
    """Everything a worker needs; each field ``x`` is also ``DUPSTREAM_X`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="DUPSTREAM_", frozen=True, extra="forbid")

    broker: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers, host:port[,host:port]")
    index: str = Field("./dupstream.db", description="milvus-lite file path or Milvus server URI")
    index_token: SecretStr | None = None
    collection: str = "dupstream_images"
    model: str = "sscd-mini"
    device: str = "auto"
    blas_threads: int = Field(
        1,
        ge=1,
        description="numpy's BLAS threads (milvus-lite's search is numpy): more spin-wait against "
        "the model's own thread pool and the decode threads",
    )
    input_topic: str = "images"
    decisions_topic: str = "image-decisions"
    dead_letter_topic: str = "image-dead-letter"
    group: str = "dupstream"
    partitions: int = Field(4, ge=1, description="partitions for topics the worker creates")
    create_topics: bool = True
    allow_roots: tuple[Path, ...] = ()
    allow_http: bool = False
    allow_hosts: tuple[str, ...] = ()
    allow_private_networks: bool = Field(
        False, description="let http(s) reach loopback/private/link-local addresses (tests, internal stores)"
    )
    fetch_timeout_s: float = Field(10.0, gt=0, description="total deadline of one http(s) fetch")
    duplicate_threshold: float | None = None
    similar_threshold: float | None = None
    tenant_thresholds: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description='JSON: {"tenant": [duplicate, similar]}'
    )
    recheck: bool | None = Field(
        None,
        description="search again after upserting to correct concurrent duplicates; default: on for a server",
    )
    default_tenant: str = "default"
    top_k: int = Field(5, ge=1, le=100)
    batch_size: int = Field(32, ge=1, le=4096)
    batch_wait_s: float = Field(0.2, gt=0)
    decode_threads: int = Field(4, ge=1)
    max_message_bytes: int = 16 * 1024 * 1024
    max_image_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 40_000_000
    shutdown_grace_s: float = Field(30.0, gt=0, description="time to finish the batch in flight on SIGTERM")
    session_timeout_s: float = Field(30.0, ge=6, description="Kafka group session timeout")
    data_dir: Path = Field(
        Path(tempfile.gettempdir()) / "dupstream",
        description="faust's state directory (tables are in memory; this holds only its version marker)",
    )
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    log_level: str = "INFO"
    log_json: bool = False

    @field_validator("tenant_thresholds", mode="before")
    @classmethod
    def _parse_tenants(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @property
    def recheck_enabled(self) -> bool:
        """milvus-lite is one process's file, so only a server index can have concurrent writers."""
        return self.recheck if self.recheck is not None else not self.index.endswith(".db")

    def threshold_book(self) -> ThresholdBook:
        base = default_thresholds(self.model)
        default = Thresholds(
            duplicate=self.duplicate_threshold if self.duplicate_threshold is not None else base.duplicate,
            similar=self.similar_threshold if self.similar_threshold is not None else base.similar,
        )
        per_tenant = {t: Thresholds(duplicate=d, similar=s) for t, (d, s) in self.tenant_thresholds.items()}
        return ThresholdBook(default=default, per_tenant=per_tenant)

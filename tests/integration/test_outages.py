"""Backends going away under a running worker: the broker restarts, the Milvus server restarts."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.fixtures.kafka import LocalKafka
from tests.fixtures.milvus import EmbeddedMilvus
from tests.fixtures.worker import Topics, WorkerProcess, collect, event, produce

pytestmark = pytest.mark.integration


def image(seed: int) -> bytes:
    """A distinct small photo-like image per seed (random blocks, so the hashes differ)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    array = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def wait_decided(bootstrap: str, topics: Topics, ids: set[str], timeout_s: float) -> dict[str, list[dict]]:
    deadline = time.monotonic() + timeout_s
    seen: dict[str, list[dict]] = {}
    while time.monotonic() < deadline:
        seen = {}
        for topic, value in collect(bootstrap, [topics.decisions, topics.dead], want=10**6, timeout_s=3):
            seen.setdefault(value.get("id") or "?", []).append({"topic": topic, **value})
        if ids <= set(seen):
            break
    return seen


def test_worker_recovers_after_broker_restart(
    local_kafka: LocalKafka | None, kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    if local_kafka is None:
        pytest.skip("KAFKA_BOOTSTRAP points at an external broker this test cannot restart")
    topics = Topics.unique(unique_name)
    worker = WorkerProcess(
        kafka_bootstrap,
        topics,
        str(tmp_path / "i.db"),
        tmp_path / "w.log",
        extra_args=["--batch-size", "4", "--batch-wait", "0.05"],
    )
    worker.start()
    try:
        produce(kafka_bootstrap, topics.input, [event(f"a{i}", data=image(i)) for i in range(8)])
        wait_decided(kafka_bootstrap, topics, {f"a{i}" for i in range(8)}, 60)
        local_kafka.restart()
        produce(kafka_bootstrap, topics.input, [event(f"b{i}", data=image(100 + i)) for i in range(8)])
        wanted = {f"a{i}" for i in range(8)} | {f"b{i}" for i in range(8)}
        seen = wait_decided(kafka_bootstrap, topics, wanted, 120)
        assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
    finally:
        worker.stop()
    assert wanted <= set(seen), (sorted(wanted - set(seen)), worker.log_tail())
    assert all(v["topic"] == topics.decisions for vs in seen.values() for v in vs)


@pytest.mark.milvus_server
def test_milvus_outage_is_retried_not_dead_lettered(
    embedded_milvus: EmbeddedMilvus | None, kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    if embedded_milvus is None:
        pytest.skip("MILVUS_URI points at an external server this test cannot restart")
    own_milvus = embedded_milvus
    topics = Topics.unique(unique_name)
    worker = WorkerProcess(
        kafka_bootstrap,
        topics,
        own_milvus.uri,
        tmp_path / "w.log",
        extra_args=["--batch-size", "4", "--batch-wait", "0.05"],
    )
    worker.start()
    stopped = False
    try:
        produce(kafka_bootstrap, topics.input, [event(f"a{i}", data=image(i)) for i in range(4)])
        wait_decided(kafka_bootstrap, topics, {f"a{i}" for i in range(4)}, 60)
        own_milvus.stop()
        stopped = True
        produce(kafka_bootstrap, topics.input, [event(f"b{i}", data=image(100 + i)) for i in range(4)])
        time.sleep(8)  # the worker meets the outage and backs off
        during = wait_decided(kafka_bootstrap, topics, set(), 1)
        own_milvus.start()
        stopped = False
        wanted = {f"a{i}" for i in range(4)} | {f"b{i}" for i in range(4)}
        seen = wait_decided(kafka_bootstrap, topics, wanted, 180)
        _, metrics = worker.get("/metrics")
    finally:
        worker.stop()
        if stopped:
            own_milvus.start()  # the server is the session's: leave it running
    assert not any(k.startswith("b") for k in during), "decided while Milvus was down?"
    assert wanted <= set(seen), (sorted(wanted - set(seen)), worker.log_tail())
    assert all(v["topic"] == topics.decisions for vs in seen.values() for v in vs), (
        "dead-lettered during outage"
    )
    retries = [
        line
        for line in metrics.splitlines()
        if line.startswith('dupstream_backend_retries_total{backend="index"}')
    ]
    assert retries and float(retries[0].split()[-1]) >= 1

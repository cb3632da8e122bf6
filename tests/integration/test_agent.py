"""The worker's agent on the real broker, with a pipeline that can be stopped between its halves.

The agent prepares batch k+1 while batch k commits. ``take_events`` acks a batch as soon as the
next one is asked for, so these tests hold a batch in its commit and check that its offsets are
not committed until its decisions are produced, and that SIGTERM finishes the batches in flight.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.fixtures.worker import Topics, WorkerProcess, collect, event, produce

pytestmark = pytest.mark.integration


class GatedWorker(WorkerProcess):
    """``tests.fixtures.gated_worker``: the service's faust app around a gated pipeline."""

    prefix: str = ""
    gate: Path = Path()
    progress: Path = Path()

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tests.fixtures.gated_worker",
            "--broker",
            self.bootstrap,
            "--prefix",
            self.prefix,
            "--gate",
            str(self.gate),
            "--progress",
            str(self.progress),
            "--web-port",
            str(self.web_port),
        ]

    def prepared(self) -> int:
        return len(self.progress.read_text().splitlines()) if self.progress.exists() else 0


def committed(bootstrap: str, topics: Topics) -> int:
    async def read() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(topics.group)
        finally:
            await admin.close()
        return sum(
            meta.offset for tp, meta in offsets.items() if tp.topic == topics.input and meta.offset > 0
        )

    return asyncio.run(read())


@pytest.fixture
def gated(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> Iterator[GatedWorker]:
    worker = GatedWorker(kafka_bootstrap, Topics.unique(unique_name), "", tmp_path / "worker.log")
    worker.prefix, worker.gate, worker.progress = unique_name, tmp_path / "gate", tmp_path / "progress"
    worker.start()
    yield worker
    worker.gate.touch()
    worker.stop(timeout_s=30)


def wait_for(condition: Callable[[], bool], timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_offsets_wait_for_the_commit_while_the_next_batch_is_prepared(
    kafka_bootstrap: str, gated: GatedWorker
) -> None:
    topics = gated.topics
    produce(kafka_bootstrap, topics.input, [event(f"img-{i}") for i in range(4)])
    assert wait_for(lambda: gated.prepared() >= 2), gated.log_tail()  # batch 2 prepared, batch 1 held
    time.sleep(3.0)  # three commit intervals
    assert committed(kafka_bootstrap, topics) == 0, "offsets committed before their decisions"
    assert collect(kafka_bootstrap, [topics.decisions], want=1, timeout_s=1) == []

    gated.gate.touch()
    decisions = collect(kafka_bootstrap, [topics.decisions], want=4, timeout_s=30)
    assert sorted(v["id"] for _, v in decisions) == [f"img-{i}" for i in range(4)]
    assert wait_for(lambda: committed(kafka_bootstrap, topics) == 4, timeout_s=30)


def test_sigterm_finishes_every_batch_in_flight_then_commits(
    kafka_bootstrap: str, gated: GatedWorker
) -> None:
    topics = gated.topics
    produce(kafka_bootstrap, topics.input, [event(f"img-{i}") for i in range(4)])
    assert wait_for(lambda: gated.prepared() >= 2), gated.log_tail()
    assert gated.proc is not None
    gated.proc.send_signal(signal.SIGTERM)  # batch 1 in its commit, batch 2 prepared
    time.sleep(1.0)
    assert gated.proc.poll() is None, "stopped without finishing the batches in flight"
    gated.gate.touch()
    try:
        exit_code = gated.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker did not stop:\n{gated.log_tail()}")
    assert exit_code == 0, gated.log_tail()
    # faust waits for every held message to be acked before it stops the agent, so both batches
    # commit normally; the agent's own stop handler is the backstop if that wait is cut short.
    decisions = collect(kafka_bootstrap, [topics.decisions], want=4, timeout_s=10)
    assert sorted(v["id"] for _, v in decisions) == [f"img-{i}" for i in range(4)]
    assert committed(kafka_bootstrap, topics) == 4, gated.log_tail()

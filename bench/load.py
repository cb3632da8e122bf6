"""Bounded load test on loopback: N events (uniques, copies, bad inputs) through the real broker.

    .venv/bin/python bench/load.py                        # 10,000 events with sscd-mini
    .venv/bin/python bench/load.py --events 2000 --model test-tiny   # quick look

Afterwards every event must have exactly one decision or dead letter (matched by input offset),
bad inputs must be dead letters with the expected reason and exact copies duplicates. Prints the
throughput and the worker's RSS at start (after warm-up), peak and end. Starts its own broker on a
free port and a worker on a temporary milvus-lite index; stops both.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service import ROOT, Worker

from bench.images import photos
from streams.spawn import free_port

BAD = [
    (b'{"id": "x", "uri": ', "invalid_json"),
    (b'{"id": "x", "data": "@@@"}', "bad_base64"),
    (b'{"uri": "file:///x.jpg"}', "missing_id"),
    (b'{"id": "x", "data": "aGVsbG8gd29ybGQ="}', "not_an_image"),
    (b'{"id": "x", "uri": "ftp://host/a.jpg"}', "unsupported_scheme"),
    (b"[1, 2, 3]", "not_an_object"),
]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build_events(count: int, seed: int = 1) -> list[tuple[bytes | None, bytes, dict[str, Any]]]:
    """(key, value, expectation) per event: 75% unique crops, 15% exact copies, 10% bad inputs."""
    rng = random.Random(seed)
    base = [p.resize((p.width // 2, p.height // 2)) for p in photos()]
    uniques: list[bytes] = []
    events: list[tuple[bytes | None, bytes, dict[str, Any]]] = []
    for i in range(count):
        roll = rng.random()
        image_id = f"load-{i}"
        if roll < 0.10:
            value, reason = BAD[i % len(BAD)]
            key = None if reason == "missing_id" else image_id.encode()  # no id anywhere
            events.append((key, value, {"dead": reason}))
            continue
        if roll < 0.25 and uniques:
            data = uniques[rng.randrange(len(uniques))]
            expect: dict[str, Any] = {"verdict": "duplicate"}
        else:
            img = base[rng.randrange(len(base))]
            w, h = img.size
            cw, ch = rng.randrange(w // 3, w // 2), rng.randrange(h // 3, h // 2)
            x, y = rng.randrange(w - cw), rng.randrange(h - ch)
            buffer = io.BytesIO()
            img.crop((x, y, x + cw, y + ch)).save(buffer, "JPEG", quality=rng.randrange(70, 95))
            data = buffer.getvalue()
            uniques.append(data)
            expect = {}
        body = {"id": image_id, "data": base64.b64encode(data).decode(), "timestamp": i}
        events.append((image_id.encode(), json.dumps(body).encode(), expect))
    return events


async def drive(
    broker: str, worker: Worker, events: list[tuple[bytes | None, bytes, dict[str, Any]]]
) -> tuple[float, dict[int, list[dict[str, Any]]]]:
    producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=10, max_request_size=16 * 1024 * 1024)
    consumer = AIOKafkaConsumer(
        worker.topics["out"],
        worker.topics["dead"],
        bootstrap_servers=broker,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await producer.start()
    await consumer.start()
    outputs: dict[int, list[dict[str, Any]]] = {}
    started = time.perf_counter()
    for key, value, _ in events:
        await producer.send(worker.topics["in"], value, key=key)
    await producer.flush()
    idle_since = time.monotonic()
    while len(outputs) < len(events) and time.monotonic() - idle_since < 120:
        batches = await consumer.getmany(timeout_ms=500)
        for records in batches.values():
            for record in records:
                value = json.loads(record.value)
                source = value.get("source") or {}
                outputs.setdefault(int(source.get("offset", -1)), []).append(value)
                idle_since = time.monotonic()
    elapsed = time.perf_counter() - started
    await producer.stop()
    await consumer.stop()
    return len(events) / elapsed, outputs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--model", default="sscd-mini")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="dupstream-load-"))
    port = free_port()
    kafka_env = {
        **os.environ,
        "DUPSTREAM_KAFKA_PORT": str(port),
        "DUPSTREAM_KAFKA_CONTROLLER_PORT": str(free_port()),
        "DUPSTREAM_KAFKA_DATA_DIR": str(workdir / "kafka"),
    }
    kafka = str(ROOT / "deploy/local/kafka")
    subprocess.run([kafka, "start"], env=kafka_env, check=True, stdout=subprocess.DEVNULL)
    broker = f"127.0.0.1:{port}"
    try:
        events = build_events(args.events)
        worker = Worker(broker, args.model, workdir, args.batch, f"load{os.getpid()}")
        samples: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(1.0):
                samples.append(rss_mb(worker.proc.pid))

        rss_start = rss_mb(worker.proc.pid)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            rate, outputs = asyncio.run(drive(broker, worker, events))
            rss_end = rss_mb(worker.proc.pid)
        finally:
            stop.set()
            worker.stop()
    finally:
        subprocess.run([kafka, "stop"], env=kafka_env, check=False)

    lost = [i for i in range(len(events)) if i not in outputs]
    repeated = [i for i, out in outputs.items() if len(out) > 1 and i >= 0]
    wrong = []
    for offset, (_, _, expect) in enumerate(events):
        out = outputs.get(offset)
        if not out:
            continue
        value = out[0]
        if "dead" in expect and value.get("reason") != expect["dead"]:
            wrong.append((offset, expect, value.get("reason") or value.get("verdict")))
        if "verdict" in expect and value.get("verdict") != expect["verdict"]:
            wrong.append((offset, expect, value.get("verdict")))
    verdicts: dict[str, int] = {}
    for out in outputs.values():
        label = out[0].get("verdict") or f"dead:{out[0].get('reason')}"
        verdicts[label] = verdicts.get(label, 0) + 1
    print(f"model {args.model}, batch {args.batch}")
    print(
        "| events | decided or dead-lettered | lost | repeated | wrong | events/s "
        "| RSS start MB | peak | end |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {len(events)} | {len([o for o in outputs if o >= 0])} | {len(lost)} | {len(repeated)} "
        f"| {len(wrong)} | "
        f"{rate:.1f} | {rss_start:.0f} | {max(samples, default=rss_end):.0f} | {rss_end:.0f} |"
    )
    print(f"outcomes: {json.dumps(dict(sorted(verdicts.items())))}")
    if samples:
        marks = {
            f"{q}%": round(samples[min(len(samples) - 1, len(samples) * q // 100)])
            for q in (10, 25, 50, 75, 90)
        }
        print(f"worker RSS MB over the run (1 s samples): {json.dumps(marks)}")
    if wrong[:5]:
        print(f"first wrong: {wrong[:5]}")
    sys.exit(1 if lost or wrong else 0)


if __name__ == "__main__":
    main()

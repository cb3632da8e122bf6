"""Service benchmark: the encoder path, the whole service and a naive loop, side by side in one run.

    .venv/bin/python bench/service.py                      # 1000 events, 3 repeats (~5 min on 2 cores)
    .venv/bin/python bench/service.py --events 300 --repeats 1 --no-latency   # quick look

What it measures, on the same images (640-px JPEGs made from real photos with seeded edits, one
in five a copy of an earlier one):

* ``encoder path``: decode + preprocess (thread pool, overlapped with the model) + encode, images/s;
* ``service``: events/s end to end through the real broker and milvus-lite: produce N events to a
  running worker, time from the first produce until the last decision arrives;
* ``naive loop``: one image at a time — decode, encode, search, insert — as a first attempt would be;
* latency from produce to decision (p50/p95/p99) while producing at 50% and 90% of the measured
  service throughput.

Absolute times drift on a shared machine; the ratios printed at the end are the figures to read.
Starts its own broker (deploy/local/kafka) on a free port unless ``--broker`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import encoders  # noqa: E402
from bench.images import make_images  # noqa: E402
from encoders.decode import decode_image  # noqa: E402
from index import IndexRecord, MilvusStore  # noqa: E402
from streams.spawn import WorkerNotReady, free_port, wait_ready, worker_command  # noqa: E402

# --- encoder path and naive loop --------------------------------------------------------


def encoder_path(encoder: Any, images: list[bytes], batch: int, threads: int = 4) -> float:
    """images/s: decode+prepare in a pool for batch k+1 while the model runs batch k."""

    def load(data: bytes) -> np.ndarray:
        return encoder.prepare(decode_image(data, draft_size=encoder.draft_size))

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        chunks = [images[i : i + batch] for i in range(0, len(images), batch)]
        pending = [pool.submit(load, d) for d in chunks[0]]
        for k in range(len(chunks)):
            prepared = np.stack([f.result() for f in pending])
            if k + 1 < len(chunks):
                pending = [pool.submit(load, d) for d in chunks[k + 1]]
            encoder.embed_prepared(prepared)
    return len(images) / (time.perf_counter() - started)


def ceiling(encoder: Any, images: list[bytes], batches: tuple[int, ...] = (1, 8, 32)) -> dict[int, float]:
    """images/s of the model alone on preprocessed inputs, per batch size."""
    prepared = np.stack([encoder.prepare(decode_image(d, draft_size=encoder.draft_size)) for d in images])
    rates = {}
    for size in batches:
        chunks = [prepared[i : i + size] for i in range(0, len(prepared) - size + 1, size)]
        encoder.embed_prepared(chunks[0])  # warm-up
        started = time.perf_counter()
        for chunk in chunks:
            encoder.embed_prepared(chunk)
        rates[size] = size * len(chunks) / (time.perf_counter() - started)
    return rates


def imagededup_loop(images: list[bytes], workdir: Path) -> float:
    """images/s: idealo imagededup's PHash over a folder of the same JPEGs, then find_duplicates.

    Its CNN method needs torchvision weights from the internet (not reachable here); its hashes
    score far lower on copy detection (docs/quality.md), so this is a speed reference only.
    """
    from imagededup.methods import PHash

    folder = workdir / f"imagededup-{time.monotonic_ns()}"
    folder.mkdir()
    for i, data in enumerate(images):
        (folder / f"{i:06d}.jpg").write_bytes(data)
    started = time.perf_counter()
    hasher = PHash(verbose=False)
    encodings = hasher.encode_images(image_dir=str(folder))
    hasher.find_duplicates(encoding_map=encodings, max_distance_threshold=10)
    return len(images) / (time.perf_counter() - started)


def naive_loop(encoder: Any, images: list[bytes], workdir: Path) -> float:
    """images/s: one image at a time — decode, encode, search, insert — on milvus-lite."""
    store = MilvusStore(
        uri=str(workdir / f"naive-{time.monotonic_ns()}.db"), dim=encoder.dim, model_id=encoder.info.model_id
    )
    store.ensure_collection()
    started = time.perf_counter()
    for i, data in enumerate(images):
        vector = encoder.embed([decode_image(data)])
        store.search(vector, tenants=["default"], top_k=5)
        store.upsert([IndexRecord(tenant="default", image_id=f"n{i}", ts=i, vector=vector[0])])
    rate = len(images) / (time.perf_counter() - started)
    store.close()
    return rate


# --- the service ----------------------------------------------------------------------------


class Worker:
    def __init__(
        self,
        broker: str,
        model: str,
        workdir: Path,
        batch: int,
        run: str,
        wait: float = 0.2,
        *,
        index: str | None = None,
        partitions: int = 1,
        group: str | None = None,
        name: str | None = None,
        ready: bool = True,
    ) -> None:
        self.port = free_port()
        self.topics = {"in": f"bench-{run}-in", "out": f"bench-{run}-out", "dead": f"bench-{run}-dead"}
        command = worker_command(
            broker=broker,
            index=index or str(workdir / f"service-{run}.db"),
            model=model,
            input_topic=self.topics["in"],
            decisions_topic=self.topics["out"],
            dead_letter_topic=self.topics["dead"],
            group=group or f"bench-{run}",
            web_port=self.port,
            partitions=partitions,
            extra=[
                "--collection",
                f"bench_{run}".replace("-", "_"),
                "--batch-size",
                str(batch),
                "--batch-wait",
                str(wait),
                "--log-level",
                "WARNING",
            ],
        )
        self.log = open(workdir / f"worker-{name or run}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        if ready:
            self.wait_ready()

    def wait_ready(self) -> None:
        try:
            wait_ready(self.proc, self.port)
        except WorkerNotReady as exc:
            raise SystemExit(f"{exc}; see {self.log.name}") from exc

    def rss_mb(self) -> float:
        """Resident memory of the worker process (Linux /proc)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def payloads(images: list[bytes], prefix: str) -> list[tuple[bytes, dict[str, Any]]]:
    return [
        (f"{prefix}-{i}".encode(), {"id": f"{prefix}-{i}", "data": base64.b64encode(d).decode()})
        for i, d in enumerate(images)
    ]


async def produce_backlog(broker: str, topic: str, events: list[tuple[bytes, dict[str, Any]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker, max_request_size=16 * 1024 * 1024, linger_ms=5)
    await producer.start()
    try:
        for key, value in events:
            value["timestamp"] = int(time.time() * 1000)
            await producer.send(topic, json.dumps(value).encode(), key=key)
        await producer.flush()
    finally:
        await producer.stop()


def decisions_consumer(broker: str, worker: Worker, offset_reset: str) -> AIOKafkaConsumer:
    """A group-less consumer of the worker's decisions and dead letters."""
    return AIOKafkaConsumer(
        worker.topics["out"],
        worker.topics["dead"],
        bootstrap_servers=broker,
        auto_offset_reset=offset_reset,
        group_id=None,
    )


async def drain_rate(broker: str, worker: Worker, count: int) -> tuple[float, dict[str, float]]:
    """events/s while a started worker drains a backlog, and where its batches spent their time.

    The rate runs from the start of the first batch (its first decision less that batch's own
    ``timings_ms``) to the last decision, so neither start-up nor the first batch's work is left
    out. The second value has each stage's share of that time: the sum over batches of the
    stage's seconds (from the decisions' ``timings_ms``) over the drain's wall time; ``encode``
    near 1.0 means the model was never waiting for input.
    """
    consumer = decisions_consumer(broker, worker, "earliest")
    await consumer.start()
    arrivals: list[float] = []
    batches: dict[str, dict[str, float]] = {}  # one timings_ms per batch, keyed by its JSON
    try:
        deadline = time.monotonic() + 900
        while len(arrivals) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                now = time.perf_counter()
                for record in records:
                    timings = json.loads(record.value).get("timings_ms", {})
                    batches.setdefault(json.dumps(timings, sort_keys=True), timings)
                arrivals.extend(now for _ in records)
    finally:
        await consumer.stop()
    first = next(iter(batches.values()), {})
    wall = arrivals[-1] - arrivals[0] + first.get("batch", 0.0) / 1000
    shares = {
        stage: sum(t.get(stage, 0.0) for t in batches.values()) / 1000 / wall
        for stage in ("fetch_decode", "exact_lookup", "encode", "search", "upsert", "commit")
    }
    return len(arrivals) / wall, shares


async def run_service(
    broker: str, worker: Worker, events: list[tuple[bytes, dict[str, Any]]], rate: float | None
) -> tuple[float, list[float]]:
    """Produce events (as fast as possible, or at ``rate``/s); returns (events/s, latencies in s)."""
    consumer = decisions_consumer(broker, worker, "latest")
    await consumer.start()
    await consumer.seek_to_end()
    producer = AIOKafkaProducer(bootstrap_servers=broker, max_request_size=16 * 1024 * 1024, linger_ms=5)
    await producer.start()
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()

    async def receive() -> None:
        while len(latencies) < len(events):
            for records in (await consumer.getmany(timeout_ms=200)).values():
                now = time.perf_counter()
                for record in records:
                    value = json.loads(record.value)
                    if value.get("id") in sent_at:
                        latencies.append(now - sent_at.pop(value["id"]))
        done.set()

    receiver = asyncio.create_task(receive())
    started = time.perf_counter()
    for i, (key, value) in enumerate(events):
        if rate is not None:
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        value["timestamp"] = int(time.time() * 1000)
        sent_at[value["id"]] = time.perf_counter()
        await producer.send(worker.topics["in"], json.dumps(value).encode(), key=key)
    await producer.flush()
    await asyncio.wait_for(done.wait(), timeout=600)
    elapsed = time.perf_counter() - started
    receiver.cancel()
    await producer.stop()
    await consumer.stop()
    return len(events) / elapsed, latencies


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process so far (Linux /proc); 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kafka_pid(data_dir: str) -> int | None:
    """The local broker's JVM (deploy/local/kafka), found by its data folder on its command line."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "java" in cmdline and data_dir in cmdline:
            return int(entry.name)
    return None


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000, q)) if values else float("nan")


def side_by_side(args: argparse.Namespace, env_broker: str, workdir: Path, images: list[bytes]) -> None:
    """Ceiling, encoder path, service, backlog drain, naive loop, peers, then latency."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")  # as in the worker, so the naive loop's search is alike
    encoder = encoders.create(args.model, device="cpu")
    results: dict[str, list[float]] = {
        "ceiling (model only)": [],
        "encoder path": [],
        "service": [],
        "service (backlog)": [],
        "naive loop": [],
    }
    rss: list[float] = []
    stage_shares: dict[str, list[float]] = {}
    cpu_ms: dict[str, list[float]] = {
        "encoder path": [],
        "worker, backlog drain": [],
        "broker, backlog drain": [],
    }
    for r in range(args.repeats):
        run = f"{os.getpid()}-{r}"
        worker = Worker(
            env_broker, args.model, workdir, args.batch, run, args.batch_wait, index=args.service_index
        )
        try:
            # warm up the worker (model, index, group) on a few events, then measure
            asyncio.run(run_service(env_broker, worker, payloads(images[-10:], f"warm{r}"), None))
            service, _ = asyncio.run(
                run_service(env_broker, worker, payloads(images[: args.events], f"r{r}"), None)
            )
            rss.append(worker.rss_mb())
            with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=10) as response:
                metrics_text = response.read().decode()
        finally:
            worker.stop()
        sums = {
            line.split()[0]: float(line.split()[1])
            for line in metrics_text.splitlines()
            if line.startswith(("dupstream_batch_size_events_sum", "dupstream_batch_size_events_count"))
        }
        if sums.get("dupstream_batch_size_events_count"):
            mean = sums["dupstream_batch_size_events_sum"] / sums["dupstream_batch_size_events_count"]
            print(f"mean worker batch: {mean:.1f} events", file=sys.stderr)
        results["service"].append(service)
        # the same events as a backlog produced before the worker starts: the drain rate
        # excludes the producer's CPU and the worker's start-up
        topics_run = f"{os.getpid()}-b{r}"
        backlog = payloads(images[: args.events], f"b{r}")
        asyncio.run(produce_backlog(env_broker, f"bench-{topics_run}-in", backlog))
        drainer = Worker(
            env_broker, args.model, workdir, args.batch, topics_run, args.batch_wait, index=args.service_index
        )
        broker_pid = kafka_pid(str(workdir / "kafka"))
        worker_cpu, broker_cpu = cpu_seconds(drainer.proc.pid), cpu_seconds(broker_pid)
        try:
            rate, shares = asyncio.run(drain_rate(env_broker, drainer, len(backlog)))
            results["service (backlog)"].append(rate)
            for stage, share in shares.items():
                stage_shares.setdefault(stage, []).append(share)
            cpu_ms["worker, backlog drain"].append(
                (cpu_seconds(drainer.proc.pid) - worker_cpu) * 1000 / len(backlog)
            )
            cpu_ms["broker, backlog drain"].append(
                (cpu_seconds(broker_pid) - broker_cpu) * 1000 / len(backlog)
            )
        finally:
            drainer.stop()
        started_cpu = time.process_time()
        results["encoder path"].append(encoder_path(encoder, images[: args.events], args.batch))
        cpu_ms["encoder path"].append((time.process_time() - started_cpu) * 1000 / args.events)
        results["naive loop"].append(naive_loop(encoder, images[args.events :], workdir))
        per_batch = ceiling(encoder, images[: 4 * args.batch])
        results["ceiling (model only)"].append(max(per_batch.values()))
        for size, rate in per_batch.items():
            results.setdefault(f"model only, batch {size}", []).append(rate)
        if not args.no_imagededup:
            results.setdefault("imagededup PHash (batch tool)", []).append(
                imagededup_loop(images[: args.events], workdir)
            )
        print(
            f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}/s" for k, v in results.items()),
            file=sys.stderr,
        )

    med = {k: statistics.median(v) for k, v in results.items()}
    print(
        f"\nmodel {args.model}, batch {args.batch}, {args.events} events, median of {args.repeats} "
        f"(runs: {json.dumps({k: [round(x, 1) for x in v] for k, v in results.items()})})\n"
    )
    print("| path | images/s |\n|---|---|")
    for name, value in med.items():
        print(f"| {name} | {value:.1f} |")
    print(f"\nservice / encoder path = {med['service'] / med['encoder path']:.2f}")
    print(f"service (backlog) / encoder path = {med['service (backlog)'] / med['encoder path']:.2f}")
    print(f"service / naive loop   = {med['service'] / med['naive loop']:.1f}")
    print(f"encoder path / ceiling = {med['encoder path'] / med['ceiling (model only)']:.2f}")
    print("\nCPU time per image (ms, all threads; 2 cores give 2,000 ms per second):")
    for name, values in cpu_ms.items():
        print(f"  {name}: {statistics.median(values):.1f}")
    print("\nBacklog drain, each stage's time summed over batches / the drain's wall time:")
    for stage, shares in stage_shares.items():
        print(f"  {stage}: {statistics.median(shares):.2f}")
    print(
        f"worker RSS after the run: {statistics.median(rss):.0f} MB (median; runs {[round(x) for x in rss]})"
    )

    if not args.no_latency:
        print("\n| load | events/s offered | p50 ms | p95 ms | p99 ms |\n|---|---|---|---|---|")
        for share in (0.5, 0.9):
            worker = Worker(
                env_broker, args.model, workdir, args.batch, f"{os.getpid()}-lat{share}", args.batch_wait
            )
            try:
                asyncio.run(run_service(env_broker, worker, payloads(images[-10:], f"wl{share}"), None))
                offered = med["service"] * share
                count = min(args.events, int(offered * 20))
                _, lat = asyncio.run(
                    run_service(env_broker, worker, payloads(images[:count], f"l{share}"), offered)
                )
            finally:
                worker.stop()
            print(
                f"| {int(share * 100)}% | {offered:.1f} | {pct(lat, 50):.0f} | {pct(lat, 95):.0f} | "
                f"{pct(lat, 99):.0f} |"
            )


def scaling(args: argparse.Namespace, env_broker: str, workdir: Path, images: list[bytes]) -> None:
    """Backlog-free throughput of 1 and 2 workers in one consumer group on one Milvus server."""
    server = None
    uri = args.scale_index
    if uri == "embedded":
        from tests.fixtures.milvus import EmbeddedMilvus

        server = EmbeddedMilvus(workdir / "milvus")
        uri = server.start()
    try:
        rates: dict[int, list[float]] = {1: [], 2: []}
        for r in range(args.repeats):
            for count in (1, 2):
                run = f"{os.getpid()}-s{count}-{r}"
                workers = [
                    Worker(
                        env_broker,
                        args.model,
                        workdir,
                        args.batch,
                        run,
                        args.batch_wait,
                        index=uri,
                        partitions=2,
                        name=f"{run}-w{i}",
                        ready=False,  # start them together, then wait for all
                    )
                    for i in range(count)
                ]
                try:
                    for worker in workers:
                        worker.wait_ready()
                    time.sleep(3.0)  # let the group settle after the last join
                    warm = payloads(images[-2 * args.batch :], f"warm-{run}")
                    asyncio.run(run_service(env_broker, workers[0], warm, None))
                    rate, _ = asyncio.run(
                        run_service(env_broker, workers[0], payloads(images[: args.events], run), None)
                    )
                finally:
                    for worker in workers:
                        worker.stop()
                rates[count].append(rate)
                print(f"scale round {r + 1}: {count} worker(s) {rate:.1f}/s", file=sys.stderr)
        one, two = (statistics.median(rates[n]) for n in (1, 2))
        print(
            f"\nscaling on a Milvus server ({'embedded ' if server else ''}{uri}), 2 partitions, "
            f"{args.events} events, median of {args.repeats} (runs: {json.dumps(rates)})\n"
        )
        print("| workers | events/s |\n|---|---|")
        print(f"| 1 | {one:.1f} |\n| 2 | {two:.1f} |")
        print(f"\n2 workers / 1 worker = {two / one:.2f}")
    finally:
        if server is not None:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="sscd-mini")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--naive-events", type=int, default=150)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batch-wait", type=float, default=0.2, help="the worker's max wait to fill a batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--broker", default=None)
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--no-imagededup", action="store_true")
    parser.add_argument(
        "--scale-index",
        default=None,
        help="a Milvus server URI, or 'embedded' to start one: measure 1 and 2 workers in one group",
    )
    parser.add_argument("--only-scale", action="store_true", help="skip everything but the scaling section")
    parser.add_argument(
        "--service-index",
        default=None,
        help="Milvus URI for the service workers (default: a milvus-lite file inside each worker)",
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="dupstream-bench-"))
    env_broker = args.broker
    kafka_env = None
    if env_broker is None:
        port = free_port()
        kafka_env = {
            **os.environ,
            "DUPSTREAM_KAFKA_PORT": str(port),
            "DUPSTREAM_KAFKA_CONTROLLER_PORT": str(free_port()),
            "DUPSTREAM_KAFKA_DATA_DIR": str(workdir / "kafka"),
        }
        subprocess.run(
            [str(ROOT / "deploy/local/kafka"), "start"],
            env=kafka_env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        env_broker = f"127.0.0.1:{port}"
    try:
        images = make_images(args.events + args.naive_events)
        if not args.only_scale:
            side_by_side(args, env_broker, workdir, images)
        if args.scale_index:
            scaling(args, env_broker, workdir, images)
    finally:
        if kafka_env is not None:
            subprocess.run([str(ROOT / "deploy/local/kafka"), "stop"], env=kafka_env, check=False)


if __name__ == "__main__":
    main()

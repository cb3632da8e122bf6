"""The ``dupstream`` command line: worker, produce, tail, scan, embed, demo.

Results go to stdout (JSON with ``--json``), logs to stderr. Every flag of ``worker`` also reads
``DUPSTREAM_<FLAG>`` from the environment (for example ``DUPSTREAM_BROKER``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
logger = logging.getLogger("dupstream")


def _configure_logging(level: str, as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "faust", "mode", "pymilvus", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _settings(**overrides: Any) -> Any:
    from pydantic import ValidationError

    from streams.settings import WorkerSettings

    try:
        return WorkerSettings(**{k: v for k, v in overrides.items() if v is not None and v != ()})
    except ValidationError as exc:
        typer.echo(f"invalid settings:\n{exc}", err=True)
        raise typer.Exit(2) from exc


Broker = Annotated[str | None, typer.Option(help="Kafka bootstrap host:port [env DUPSTREAM_BROKER]")]
Index = Annotated[str | None, typer.Option(help="milvus-lite file or Milvus URI [env DUPSTREAM_INDEX]")]
Model = Annotated[str | None, typer.Option(help="encoder name, see `dupstream models` [env DUPSTREAM_MODEL]")]


@app.command()
def worker(
    broker: Broker = None,
    index: Index = None,
    model: Model = None,
    collection: Annotated[str | None, typer.Option(help="Milvus collection [DUPSTREAM_COLLECTION]")] = None,
    input_topic: Annotated[str | None, typer.Option(help="[DUPSTREAM_INPUT_TOPIC]")] = None,
    decisions_topic: Annotated[str | None, typer.Option(help="[DUPSTREAM_DECISIONS_TOPIC]")] = None,
    dead_letter_topic: Annotated[str | None, typer.Option(help="[DUPSTREAM_DEAD_LETTER_TOPIC]")] = None,
    group: Annotated[str | None, typer.Option(help="consumer group / app id [DUPSTREAM_GROUP]")] = None,
    partitions: Annotated[int | None, typer.Option(help="partitions of created topics")] = None,
    allow_root: Annotated[
        list[Path] | None, typer.Option(help="file:// URIs are read only under these")
    ] = None,
    allow_http: Annotated[
        bool | None, typer.Option(help="allow http(s):// URIs [DUPSTREAM_ALLOW_HTTP]")
    ] = None,
    allow_host: Annotated[list[str] | None, typer.Option(help="hosts http(s) may fetch from")] = None,
    duplicate_threshold: Annotated[float | None, typer.Option(help="cosine >= this: duplicate")] = None,
    similar_threshold: Annotated[float | None, typer.Option(help="cosine >= this: similar")] = None,
    batch_size: Annotated[int | None, typer.Option(help="events per micro-batch")] = None,
    recheck: Annotated[
        bool | None,
        typer.Option(help="re-search after upsert to correct concurrent duplicates (default: server)"),
    ] = None,
    batch_wait: Annotated[float | None, typer.Option(help="max seconds to fill a batch")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N, mps")] = None,
    session_timeout: Annotated[
        float | None, typer.Option(help="Kafka group session timeout, seconds")
    ] = None,
    web_port: Annotated[int | None, typer.Option(help="port of /metrics, /healthz, /readyz")] = None,
    log_level: Annotated[str | None, typer.Option()] = None,
    log_json: Annotated[bool | None, typer.Option(help="structured JSON logs")] = None,
) -> None:
    """Run a dedup worker: consume image events, emit decisions and dead letters.

    Example: dupstream worker --broker 127.0.0.1:19092 --index ./dupstream.db --allow-root /data/images
    """
    settings = _settings(
        broker=broker,
        index=index,
        model=model,
        collection=collection,
        input_topic=input_topic,
        decisions_topic=decisions_topic,
        dead_letter_topic=dead_letter_topic,
        group=group,
        partitions=partitions,
        allow_roots=tuple(allow_root or ()),
        allow_http=allow_http,
        allow_hosts=tuple(allow_host or ()),
        duplicate_threshold=duplicate_threshold,
        similar_threshold=similar_threshold,
        batch_size=batch_size,
        recheck=recheck,
        batch_wait_s=batch_wait,
        device=device,
        session_timeout_s=session_timeout,
        web_port=web_port,
        log_level=log_level,
        log_json=log_json,
    )
    _configure_logging(settings.log_level, settings.log_json)
    from streams.worker import run_worker

    run_worker(settings)


@app.command()
def produce(
    paths: Annotated[list[Path], typer.Argument(help="image files or directories")],
    topic: Annotated[str, typer.Option(help="input topic")] = "images",
    broker: Annotated[str, typer.Option(envvar="DUPSTREAM_BROKER")] = "127.0.0.1:19092",
    uri: Annotated[
        bool, typer.Option("--uri/--inline", help="send file:// URIs instead of inline data")
    ] = False,
    tenant: Annotated[str | None, typer.Option(help="tenant of every event")] = None,
) -> None:
    """Send image files as events.

    Example: dupstream produce ./photos --topic images --broker 127.0.0.1:19092
    """
    from tqdm import tqdm

    from streams.client import iter_image_files, produce_images

    files = iter_image_files(paths)
    if not files:
        typer.echo("no image files found", err=True)
        raise typer.Exit(1)
    with tqdm(total=len(files), unit="img", file=sys.stderr, disable=len(files) < 20) as bar:
        sent = asyncio.run(produce_images(broker, topic, files, inline=not uri, tenant=tenant, progress=bar))
    typer.echo(json.dumps({"sent": sent, "topic": topic}))


@app.command()
def tail(
    topic: Annotated[str, typer.Option(help="decisions topic")] = "image-decisions",
    broker: Annotated[str, typer.Option(envvar="DUPSTREAM_BROKER")] = "127.0.0.1:19092",
    from_beginning: Annotated[bool, typer.Option(help="start at the oldest decision")] = True,
    idle_timeout: Annotated[float | None, typer.Option(help="exit after this many idle seconds")] = None,
    max_messages: Annotated[int | None, typer.Option("--max", help="exit after this many")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Pretty-print decisions as they arrive.

    Example: dupstream tail --idle-timeout 10
    """
    from streams.client import consume_json

    async def run() -> None:
        seen = 0
        async for _, value in consume_json(
            broker, [topic], from_beginning=from_beginning, idle_timeout_s=idle_timeout
        ):
            typer.echo(json.dumps(value) if as_json else format_decision(value))
            seen += 1
            if max_messages is not None and seen >= max_messages:
                return

    asyncio.run(run())


def format_decision(value: dict[str, Any]) -> str:
    """One line per decision: verdict, id, best match."""
    if "reason" in value:
        return f"DEAD-LETTER  {value.get('id') or '?':<40} {value['reason']}: {value.get('message', '')[:80]}"
    matches = value.get("matches") or []
    best = f"{matches[0]['id']} ({matches[0]['score']:.3f})" if matches else "-"
    verdict = value.get("verdict", "?").upper()
    return (
        f"{verdict:<10}  {value.get('id', '?'):<40} canonical={value.get('canonical_id', '-')}  best={best}"
    )


@app.command()
def scan(
    paths: Annotated[list[Path], typer.Argument(help="folders or files; images are taken in name order")],
    model: Annotated[str, typer.Option(envvar="DUPSTREAM_MODEL")] = "sscd-mini",
    index: Annotated[str | None, typer.Option(help="milvus-lite file to keep (default: temporary)")] = None,
    duplicate_threshold: Annotated[float | None, typer.Option()] = None,
    similar_threshold: Annotated[float | None, typer.Option()] = None,
    device: Annotated[str, typer.Option()] = "auto",
    batch_size: Annotated[int, typer.Option()] = 32,
    as_json: Annotated[bool, typer.Option("--json", help="print every decision as JSON lines")] = False,
) -> None:
    """Decide a folder offline (no Kafka) with the same pipeline; prints duplicate groups.

    Example: dupstream scan ./photos --json
    """
    _configure_logging("WARNING")
    from streams.scan import duplicate_groups, scan_paths

    decisions = scan_paths(
        paths,
        model=model,
        index=index,
        device=device,
        batch_size=batch_size,
        duplicate_threshold=duplicate_threshold,
        similar_threshold=similar_threshold,
    )
    if as_json:
        for decision in decisions:
            typer.echo(json.dumps(decision))
        return
    groups = duplicate_groups(decisions)
    for canonical, members in groups.items():
        typer.echo(canonical)
        for member in members:
            typer.echo(f"  = {member}")
    dead = [d for d in decisions if "reason" in d]
    typer.echo(
        f"{len(decisions)} images, {sum(len(m) for m in groups.values())} duplicates in "
        f"{len(groups)} groups, {len(dead)} unreadable",
        err=True,
    )


@app.command()
def embed(
    paths: Annotated[list[Path], typer.Argument(help="image files or directories")],
    out: Annotated[Path, typer.Option(help="output .npz with ids and vectors")],
    model: Annotated[str, typer.Option(envvar="DUPSTREAM_MODEL")] = "sscd-mini",
    device: Annotated[str, typer.Option()] = "auto",
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
) -> None:
    """Write embeddings of images to an .npz (``ids``: the paths, ``vectors``: N x D float32).

    Ids are the paths as ``produce`` names its events: normalised, so ``./a.jpg`` is ``a.jpg``.

    Example: dupstream embed --model sscd --out vectors.npz ./photos
    """
    _configure_logging("WARNING")
    from streams.embed import embed_files

    if not out.parent.is_dir():
        typer.echo(f"--out folder {out.parent} does not exist", err=True)
        raise typer.Exit(2)
    count, skipped = embed_files(paths, out=out, model=model, device=device, batch_size=batch_size)
    typer.echo(json.dumps({"written": count, "skipped": skipped, "out": str(out)}))
    if count == 0 and skipped:
        raise typer.Exit(1)


@app.command()
def models() -> None:
    """List the registered encoders."""
    import encoders

    for name in encoders.available():
        typer.echo(name)


@app.command()
def demo(
    broker: Annotated[str, typer.Option(envvar="DUPSTREAM_BROKER")] = "127.0.0.1:19092",
    model: Annotated[str, typer.Option(envvar="DUPSTREAM_MODEL")] = "sscd-mini",
    workdir: Annotated[Path, typer.Option(help="images, index and logs go here")] = Path(".local/demo"),
) -> None:
    """Produce real photos and edited copies through a worker on a running broker; print decisions.

    Example: deploy/local/kafka start && dupstream demo
    """
    _configure_logging("WARNING")
    from streams.demo import run_demo

    raise typer.Exit(run_demo(broker=broker, model=model, workdir=workdir))


@app.command("eval")
def eval_command(
    model: Annotated[str, typer.Option(help="encoder, or imagededup:phash|dhash|whash|ahash")] = "sscd-mini",
    size: Annotated[str, typer.Option(help="smoke (sample photos, seconds) or full")] = "smoke",
    seed: Annotated[int, typer.Option(help="benchmark seed")] = 0,
    service: Annotated[bool, typer.Option("--service", help="score `scan` decisions, not vectors")] = False,
    duplicate_threshold: Annotated[float | None, typer.Option(help="fixed (default: calibrated)")] = None,
    input_size: Annotated[int | None, typer.Option(help="lever: encoder input side")] = None,
    flip: Annotated[bool, typer.Option("--flip", help="lever: flip-averaged descriptors")] = False,
    device: Annotated[str, typer.Option()] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="the full report as JSON")] = False,
) -> None:
    """Copy-detection quality on the benchmark: µAP, recall@P90 and @1 per level, calibrated thresholds.

    Example: dupstream eval --model sscd --size full --json
    """
    _configure_logging("WARNING")
    from streams.quality.build import build_benchmark
    from streams.quality.evaluate import Levers, evaluate_encoder, evaluate_service, format_markdown

    if size not in ("smoke", "full"):
        typer.echo(f"--size must be smoke or full, got {size!r}", err=True)
        raise typer.Exit(2)
    bench = build_benchmark(size, seed=seed)
    if service:
        report = evaluate_service(model, bench, duplicate_threshold=duplicate_threshold, device=device)
    else:
        thresholds = None
        if duplicate_threshold is not None:
            thresholds = {"duplicate": duplicate_threshold, "similar": duplicate_threshold}
        levers = Levers(input_size=input_size, flip=flip)
        report = evaluate_encoder(model, bench, levers=levers, thresholds=thresholds, device=device)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=1, default=float))
        return
    typer.echo(format_markdown([report]))
    typer.echo(f"thresholds: {json.dumps(report.thresholds)}  ({report.calibrated_on})")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

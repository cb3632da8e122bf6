"""The pipeline on real milvus-lite and real photos, without Kafka: ordering, replay, exact copies."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import encoders
from index import MilvusStore
from streams.decide import ThresholdBook, Thresholds
from streams.events import InboundMessage, Source
from streams.fetch import Fetcher, FetchPolicy
from streams.pipeline import DedupPipeline, PipelineConfig
from tests.fixtures.photos import edited_copies, jpeg, sample_photos

pytestmark = pytest.mark.integration

# phash: real, deterministic and fast; its thresholds are the service defaults for it.
THRESHOLDS = Thresholds(duplicate=0.75, similar=0.6)


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[DedupPipeline]:
    encoder = encoders.create("phash")
    store = MilvusStore(uri=str(tmp_path / "p.db"), dim=encoder.dim, model_id=encoder.info.model_id)
    store.ensure_collection()
    config = PipelineConfig(
        thresholds=ThresholdBook(default=THRESHOLDS, per_tenant={"strict": Thresholds(0.999, 0.999)})
    )
    pipe = DedupPipeline(encoder=encoder, store=store, fetcher=Fetcher(FetchPolicy()), config=config)
    yield pipe
    pipe.close()
    store.close()


_offset = iter(range(1_000_000))


def message(image_id: str, data: bytes, ts: int, **extra: Any) -> InboundMessage:
    body = {"id": image_id, "data": base64.b64encode(data).decode(), "timestamp": ts, **extra}
    return InboundMessage(image_id.encode(), json.dumps(body).encode(), Source("t", 0, next(_offset)), ts)


def run(pipeline: DedupPipeline, messages: list[InboundMessage]) -> dict[str, dict[str, Any]]:
    return {out.value.get("id") or "?": out.value for out in asyncio.run(pipeline.process(messages))}


def stable(decision: dict[str, Any]) -> tuple[Any, ...]:
    return (decision["verdict"], decision["canonical_id"], json.dumps(decision["matches"]))


def test_later_copy_is_the_duplicate_even_when_it_arrives_first(pipeline: DedupPipeline) -> None:
    coffee = sample_photos()["coffee"]
    out = run(
        pipeline,
        [message("copy", edited_copies(coffee)["jpeg50"], ts=20), message("orig", jpeg(coffee), ts=10)],
    )
    assert out["orig"]["verdict"] == "unique"
    assert out["copy"]["verdict"] == "duplicate" and out["copy"]["canonical_id"] == "orig"


def test_replay_gives_the_same_decision_and_never_matches_itself(pipeline: DedupPipeline) -> None:
    photo = sample_photos()["rocket"]
    first = run(
        pipeline,
        [
            message("a", jpeg(photo), ts=1),
            message("b", edited_copies(photo)["half"], ts=2),
            message("c", jpeg(sample_photos()["chelsea"]), ts=3),
        ],
    )
    # crash after upsert, before commit: the whole batch comes again, and then one event alone
    again = run(
        pipeline,
        [
            message("a", jpeg(photo), ts=1),
            message("b", edited_copies(photo)["half"], ts=2),
            message("c", jpeg(sample_photos()["chelsea"]), ts=3),
        ],
    )
    alone = run(pipeline, [message("b", edited_copies(photo)["half"], ts=2)])
    for image_id in "abc":
        assert stable(again[image_id]) == stable(first[image_id]), image_id
    assert stable(alone["b"]) == stable(first["b"])
    assert all(m["id"] != "a" for m in again["a"]["matches"])
    assert first["a"]["verdict"] == "unique" and first["b"]["verdict"] == "duplicate"


def test_exact_copies_use_the_hash_not_the_model(pipeline: DedupPipeline) -> None:
    data = jpeg(sample_photos()["astronaut"])
    run(pipeline, [message("orig", data, ts=1)])
    out = run(pipeline, [message("same-bytes", data, ts=2), message("same-bytes-2", data, ts=3)])
    for image_id in ("same-bytes", "same-bytes-2"):
        assert out[image_id]["verdict"] == "duplicate"
        assert out[image_id]["matches"][0]["exact"] is True
        assert out[image_id]["canonical_id"] == "orig"
    png = io.BytesIO()
    sample_photos()["astronaut"].save(png, "PNG")
    lossless = io.BytesIO()
    sample_photos()["astronaut"].save(lossless, "WEBP", lossless=True)
    out = run(pipeline, [message("png", png.getvalue(), ts=4), message("webp", lossless.getvalue(), ts=5)])
    assert out["webp"]["matches"][0] == {"id": "png", "score": 1.0, "verdict": "duplicate", "exact": True}


def test_tenants_are_isolated_and_thresholds_per_tenant(pipeline: DedupPipeline) -> None:
    photo = sample_photos()["chelsea"]
    out = run(
        pipeline,
        [
            message("a", jpeg(photo), ts=1, tenant="t1"),
            message("b", edited_copies(photo)["jpeg50"], ts=2, tenant="t2"),
            message("c", jpeg(photo), ts=3, tenant="strict"),
            message("d", edited_copies(photo)["crop90"], ts=4, tenant="strict"),
        ],
    )
    assert out["b"]["verdict"] == "unique"  # t1's image is invisible to t2
    assert out["d"]["thresholds"] == {"duplicate": 0.999, "similar": 0.999}
    assert out["d"]["verdict"] == "unique"


def test_delete_removes_from_index(pipeline: DedupPipeline) -> None:
    photo = sample_photos()["coffee"]
    run(pipeline, [message("orig", jpeg(photo), ts=1)])
    tombstone = InboundMessage(b"orig", None, Source("t", 0, next(_offset)), 2)
    assert run(pipeline, [tombstone])["orig"]["deleted"] == 1
    assert run(pipeline, [message("copy", edited_copies(photo)["half"], ts=3)])["copy"]["verdict"] == "unique"


def test_bad_events_are_dead_lettered_and_the_batch_is_still_decided(pipeline: DedupPipeline) -> None:
    photo = sample_photos()["rocket"]
    bad = InboundMessage(b"bad", b'{"id": "bad", "data": "@@"}', Source("t", 0, next(_offset)), 1)
    text = message("text", b"hello, not an image", ts=2)
    results = asyncio.run(pipeline.process([bad, text, message("ok", jpeg(photo), ts=3)]))
    kinds = [(r.kind, r.value.get("reason") or r.value.get("verdict")) for r in results]
    assert kinds == [("dead_letter", "bad_base64"), ("dead_letter", "not_an_image"), ("decision", "unique")]
    assert base64.b64decode(results[0].value["value"]) == bad.value


def test_batch_prepared_before_the_previous_commit_decides_as_if_sequential(
    pipeline: DedupPipeline,
) -> None:
    """The worker prepares batch k+1 while batch k commits: copies across the two still match."""
    astronaut, chelsea = sample_photos()["astronaut"], sample_photos()["chelsea"]
    original = jpeg(astronaut)
    first = [message("orig", original, ts=1), message("cat", jpeg(chelsea), ts=2)]
    second = [
        message("byte-copy", original, ts=3),
        message("edited", edited_copies(astronaut)["jpeg50"], ts=4),
        message("cat-copy", edited_copies(chelsea)["half"], ts=5),
    ]

    async def overlapped() -> list[dict[str, Any]]:
        prepared_first = await pipeline.encode(await pipeline.prepare(first))
        prepared_second = await pipeline.encode(await pipeline.prepare(second))  # `first` not indexed yet
        return [o.value for o in await pipeline.commit(prepared_first)] + [
            o.value for o in await pipeline.commit(prepared_second)
        ]

    out = {d["id"]: d for d in asyncio.run(overlapped())}
    assert out["orig"]["verdict"] == "unique" and out["cat"]["verdict"] == "unique"
    assert out["byte-copy"]["verdict"] == "duplicate" and out["byte-copy"]["matches"][0]["exact"] is True
    assert out["byte-copy"]["canonical_id"] == "orig"
    assert out["edited"]["verdict"] == "duplicate" and out["edited"]["canonical_id"] == "orig"
    assert out["cat-copy"]["canonical_id"] == "cat"
    assert pipeline.store.count() == 4  # the byte copy is not stored

"""A corpus of hostile and broken inputs: each gets one record with a precise reason, nothing crashes.

The same corpus (built by :func:`build_corpus`, one table of cases) goes

* through the real :class:`DedupPipeline` on milvus-lite in one batch mixed with good photos, with a
  fetcher that can reach a hostile HTTP server on 127.0.0.1 (redirects, stalls, endless bodies);
* through a real worker process on the real broker. The worker refuses private networks (there is
  no flag to allow them), so every URL to the loopback test server is refused before any request
  (``address_not_allowed``): those cases carry a separate worker expectation, and the server must
  see no request at all.

``pytest -s`` prints a summary table per run.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import random
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer
from PIL import Image

import encoders
from index import MilvusStore
from streams.decide import ThresholdBook, Thresholds
from streams.events import InboundMessage, Source
from streams.fetch import Fetcher, FetchPolicy
from streams.pipeline import DEAD_LETTER_INLINE_BYTES, DedupPipeline, Outgoing, PipelineConfig
from tests.fixtures.http_server import HostileServer, hostile_server, small_jpeg
from tests.fixtures.photos import jpeg, sample_photos
from tests.fixtures.worker import Topics, WorkerProcess, collect, event, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(180),
    pytest.mark.filterwarnings("ignore:Corrupt EXIF data"),  # the odd-corrupt-exif case, on purpose
]

DECIDED = "decided"
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_IMAGE_BYTES = 2 * 1024 * 1024
MAX_PIXELS = 20_000_000
FETCH_TIMEOUT_S = 2.0  # the stalled URLs wait this long, in parallel; less flakes on a busy 2-core box


@dataclass(frozen=True)
class Case:
    """One input: its key and value, and what must come out (a dead-letter reason or ``decided``)."""

    name: str
    key: bytes | None
    value: bytes
    expect: str
    worker_expect: str | None = None  # where the worker (private networks refused) differs
    says: str = ""  # a phrase the dead letter's message must contain

    def expected(self, worker: bool) -> str:
        return self.worker_expect if worker and self.worker_expect else self.expect


# --- corpus --------------------------------------------------------------------------------------


def _body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_bomb(width: int, height: int) -> bytes:
    """A 70-byte PNG whose header declares ``width`` x ``height`` 8-bit grey pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(bytes(64)))
        + _png_chunk(b"IEND", b"")
    )


def _odd_images(photo: Image.Image) -> dict[str, bytes]:
    """Images that decode fine although they are unusual, and broken ones."""
    small = photo.resize((160, 120))
    good = jpeg(small)
    png = _png(small)
    grey16 = Image.fromarray((np.arange(96 * 128, dtype=np.uint16).reshape(96, 128) * 5).astype(np.uint16))
    cmyk = io.BytesIO()
    small.convert("CMYK").save(cmyk, "JPEG")
    gif = io.BytesIO()
    frames = [small.convert("P"), small.rotate(180).convert("P")]
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    garbage_exif = b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, 500) + b"\xff" * 40
    bad_exif = good[:2] + b"\xff\xe1" + struct.pack(">H", len(garbage_exif) + 2) + garbage_exif + good[2:]
    bad_crc = bytearray(png)
    bad_crc[29] ^= 0xFF  # the IHDR checksum
    text_bomb = (
        png[:33]  # signature + IHDR
        + _png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"A" * 20_000_000, 9))
        + png[33:]
    )
    real_bomb = io.BytesIO()
    Image.new("L", (5000, 5000)).save(real_bomb, "PNG")  # 25 Mpx of zeros in ~25 KB
    return {
        "jpeg": good,
        "png": png,
        "png16": _png(grey16),
        "cmyk": cmyk.getvalue(),
        "gif": gif.getvalue(),
        "bad_exif": bad_exif,
        "bad_crc": bytes(bad_crc),
        "text_bomb": text_bomb,
        "real_bomb": real_bomb.getvalue(),
        "header_bomb": _png_header_bomb(100_000, 100_000),
        "sliver": _png(Image.new("L", (1, 100_000))),
    }


SVG = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" '
    b'height="64"><script>alert(1)</script><rect width="64" height="64"/></svg>'
)
PDF = b"%PDF-1.7\n1 0 obj <</Type /Catalog>> endobj\ntrailer <</Root 1 0 R>>\n%%EOF\n"
HTML = b"<!DOCTYPE html>\n<html><head><title>404</title></head><body>Not Found</body></html>\n"


def build_corpus(root: Path, outside: Path, server: HostileServer) -> list[Case]:
    """Every case of the issue, plus good photos; files for the ``file://`` cases go under ``root``."""
    photos = sample_photos()
    good = {name: jpeg(photos[name].resize((256, 192))) for name in ("astronaut", "chelsea", "rocket")}
    odd = _odd_images(photos["coffee"])

    (root / "good.jpg").write_bytes(jpeg(photos["motorcycle_left"].resize((256, 192))))
    (root / "photo.txt").write_bytes(_png(photos["china"].resize((200, 150))))  # wrong extension
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("shopping list: milk, eggs\n")
    (root / "huge.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(MAX_IMAGE_BYTES))
    (root / "folder.jpg").mkdir()
    os.mkfifo(root / "pipe.jpg")
    (outside / "secret.jpg").write_bytes(good["rocket"])
    os.symlink(outside / "secret.jpg", root / "escape.jpg")

    def raw(name: str, value: bytes, expect: str, says: str = "", key: bytes | None = b"") -> Case:
        """A message with exactly this value (key: the name unless given)."""
        return Case(name, name.encode() if key == b"" else key, value, expect, None, says)

    def fields(name: str, expect: str, **body: Any) -> Case:
        """A JSON event with exactly these fields."""
        return Case(name, name.encode(), json.dumps(body).encode(), expect)

    def data(name: str, payload: bytes, expect: str, says: str = "") -> Case:
        return Case(name, name.encode(), _body(id=name, data=_b64(payload)), expect, None, says)

    def uri(name: str, target: str, expect: str, worker: str | None = None, says: str = "") -> Case:
        return Case(name, name.encode(), _body(id=name, uri=target), expect, worker, says)

    def http(path: str, host: str = "127.0.0.1") -> str:
        return server.url(path, host=host)

    def redirect(target: str) -> str:
        return http(f"/redirect?to={target}")

    refused = "address_not_allowed"  # the worker's answer to anything on 127.0.0.1
    escaped = "outside the allowed roots"
    weird_id = '图片-"1"\\'
    weird = _body(id=weird_id, tenant="t'\"\n", data=_b64(odd["jpeg"]))
    digits = b"9" * 5000
    url_safe_b64 = base64.urlsafe_b64encode(b"\xfb\xff" * 30).decode()  # "-" and "_" are not base64
    other_port = f"http://127.0.0.1:{free_port()}/"
    files = f"file://{root}"
    # One case per line, like a table: longer lines than elsewhere, and no reflowing.
    # fmt: off
    return [
        # -- good photos, and inputs that are odd but decodable: all decided ----------------------
        data("good-astronaut", good["astronaut"], DECIDED),
        data("good-chelsea", good["chelsea"], DECIDED),
        raw("good-raw-bytes", good["rocket"], DECIDED),
        uri("good-file-uri", (root / "good.jpg").as_uri(), DECIDED),
        data("odd-16-bit-png", odd["png16"], DECIDED),
        data("odd-cmyk-jpeg", odd["cmyk"], DECIDED),
        raw("odd-animated-gif", odd["gif"], DECIDED),
        data("odd-corrupt-exif", odd["bad_exif"], DECIDED),
        uri("odd-wrong-extension", (root / "photo.txt").as_uri(), DECIDED),
        uri("odd-wrong-content-type", http("/image-as-text.txt"), DECIDED, refused),
        Case("odd-unicode-id-tenant", weird_id.encode(), weird, DECIDED),
        # -- parsing ------------------------------------------------------------------------------
        raw("invalid-json", b'{"id": "invalid-json", "data": ', "invalid_json"),
        raw("invalid-json-not-utf8", b'{"id": "\xff\xfe"}', "invalid_json"),
        raw("invalid-json-deep-nesting", b"[" * 200_000, "invalid_json"),
        raw("invalid-json-5000-digit-int", b'{"id": "x", "timestamp": ' + digits + b"}", "invalid_json"),
        raw("invalid-json-nan", b'{"id": "x", "data": "AAAA", "metadata": {"x": NaN}}', "invalid_json"),
        raw("not-an-object-array", b'[{"id": "a", "data": "AAAA"}]', "not_an_object"),
        raw("not-an-object-string", b'"hello"', "not_an_object"),
        raw("not-an-object-number", b"42\n", "not_an_object"),
        raw("not-an-object-null", b"null\n", "not_an_object"),
        raw("missing-id-no-key", _body(data=_b64(good["chelsea"])), "missing_id", key=None),
        raw("missing-id-raw-bytes-no-key", good["chelsea"], "missing_id", key=None),
        fields("empty-id", "missing_id", id="", data=_b64(good["chelsea"])),
        fields("blank-id", "missing_id", id="   ", data=_b64(good["chelsea"])),
        fields("huge-id", "bad_id", id="x" * 100_000, data="AAAA"),  # > 64 KiB: dead letter has value_ref
        fields("non-string-id", "bad_id", id=12345, data="AAAA"),
        fields("object-id", "bad_id", id={"$ne": None}, data="AAAA"),
        fields("control-char-id", "bad_id", id="a\x00b", data="AAAA"),
        raw("lone-surrogate-id", b'{"id": "a\\ud800", "data": "AAAA"}', "bad_id"),
        raw("key-not-utf8", good["chelsea"], "bad_id", key=b"\xff\xfe\xfd"),
        fields("unknown-field", "unknown_field", id="u", data="AAAA", __proto__={"admin": True}),
        fields("both-uri-and-data", "both_uri_and_data", id="b", uri="file:///x.jpg", data="AAAA"),
        fields("neither-uri-nor-data", "no_image", id="n", metadata={"uri": "file:///x.jpg"}),
        fields("bad-base64", "bad_base64", id="b", data="not base64!!"),
        fields("bad-base64-url-alphabet", "bad_base64", id="b", data=url_safe_b64),
        fields("data-not-a-string", "bad_base64", id="d", data=12),
        raw("zero-bytes-value", b"", "empty"),
        fields("zero-bytes-data", "empty", id="z", data=""),
        fields("bad-timestamp", "bad_timestamp", id="t", data="AAAA", timestamp="yesterday"),
        fields("bad-tenant", "bad_tenant", id="t", data="AAAA", tenant="t" * 200),
        fields("bad-metadata", "bad_metadata", id="m", data="AAAA", metadata=[]),
        fields("bad-op", "bad_op", id="o", op="drop_collection"),
        fields("non-string-uri", "bad_uri", id="u", uri=["file:///etc/passwd"]),
        data("over-the-size-limit", os.urandom(MAX_MESSAGE_BYTES), "message_too_large"),
        # -- decoding -----------------------------------------------------------------------------
        data("truncated-jpeg", odd["jpeg"][: len(odd["jpeg"]) // 2], "truncated"),
        raw("truncated-png", odd["png"][: len(odd["png"]) // 2], "truncated"),
        raw("jpeg-header-only", odd["jpeg"][:300], "truncated"),
        raw("png-bad-checksum", odd["bad_crc"], "corrupt"),
        raw("png-text-chunk-bomb", odd["text_bomb"], "corrupt", says="too large"),
        raw("text-file", b"hello, this is a plain text file\n", "not_an_image", says="plain text"),
        data("html-page", HTML, "not_an_image", says="HTML"),
        raw("svg-with-script", SVG, "unsupported_format", says="SVG"),
        data("pdf", PDF, "not_an_image", says="PDF"),
        raw("zip", b"PK\x03\x04" + bytes(200), "not_an_image", says="ZIP"),
        raw("psd", b"8BPS" + bytes(200), "unsupported_format", says="PSD"),
        raw("random-bytes", b"\x00\x01" + os.urandom(4000), "not_an_image"),
        raw("bomb-header-100k-x-100k", odd["header_bomb"], "too_many_pixels", says="10,000,000,000"),
        data("bomb-real-5000-x-5000", odd["real_bomb"], "too_many_pixels", says="25,000,000"),
        raw("sliver-1-x-100000", odd["sliver"], "bad_dimensions", says="1x100000"),
        # -- file:// ------------------------------------------------------------------------------
        uri("file-outside-root", "file:///etc/passwd", "path_not_allowed", says=escaped),
        uri("file-path-traversal", f"{files}/../outside/secret.jpg", "path_not_allowed", says=escaped),
        uri("file-encoded-traversal", f"{files}/%2e%2e/outside/secret.jpg", "path_not_allowed", says=escaped),
        uri("file-symlink-out-of-root", (root / "escape.jpg").as_uri(), "path_not_allowed", says=escaped),
        uri("file-with-host", f"file://evil.example{root}/good.jpg", "path_not_allowed", says="evil.example"),
        uri("file-nul-byte", f"{files}/good.jpg%00.png", "path_not_allowed", says="NUL"),
        uri("file-missing", (root / "missing.jpg").as_uri(), "not_found", says="does not exist"),
        uri("file-directory", (root / "folder.jpg").as_uri(), "not_a_file", says="directory"),
        uri("file-fifo", (root / "pipe.jpg").as_uri(), "not_a_file", says="not a regular file"),
        uri("file-over-max-image-bytes", (root / "huge.jpg").as_uri(), "too_large", says="-byte limit"),
        uri("file-empty", (root / "empty.jpg").as_uri(), "empty", says="0 bytes"),
        uri("file-text-named-jpg", (root / "notes.jpg").as_uri(), "not_an_image", says="plain text"),
        # -- other schemes, malformed URIs --------------------------------------------------------
        uri("scheme-ftp", "ftp://images.example.org/a.jpg", "unsupported_scheme", says="'ftp'"),
        uri("scheme-gopher", "gopher://127.0.0.1:11211/_stats", "unsupported_scheme", says="'gopher'"),
        uri("scheme-data-url", "data:image/png;base64," + _b64(odd["png"][:64]), "unsupported_scheme"),
        uri("scheme-javascript", "javascript:alert(1)", "unsupported_scheme", says="'javascript'"),
        uri("scheme-none", "/etc/passwd", "unsupported_scheme", says="(none)"),
        uri("uri-bad-port", "http://127.0.0.1:99999/a.jpg", "bad_uri", says="Port out of range"),
        uri("uri-bad-ipv6", "http://[::1/a.jpg", "bad_uri", says="Invalid IPv6 URL"),
        # -- http(s):// (the pipeline reaches the test server, the worker refuses all of 127.0.0.1) -
        uri("http-loopback-by-name", http("/image.jpg", host="localhost"), "host_not_allowed", refused),
        uri("http-link-local-metadata", "http://169.254.169.254/latest/", "host_not_allowed", refused),
        uri("http-private-10", "http://10.0.0.1/a.jpg", "host_not_allowed", refused, says="10.0.0.1"),
        uri("http-host-not-allowed", "https://img.example.org/", "host_not_allowed", says="img.example.org"),
        uri("http-redirect-to-metadata", redirect("http://169.254.169.254/"), "host_not_allowed", refused),
        uri("http-redirect-to-private", redirect("http://10.0.0.1/a.jpg"), "host_not_allowed", refused),
        uri("http-redirect-to-other-port", redirect(other_port), "host_not_allowed", refused),
        uri("http-redirect-to-file", redirect("file:///etc/passwd"), "unsupported_scheme", refused),
        uri("http-redirect-loop", http("/loop"), "too_many_redirects", refused),
        uri("http-never-answers", http("/never"), "timeout", refused),
        uri("http-stalls-after-headers", http("/stall"), "timeout", refused),
        uri("http-drip-feed", http("/drip"), "timeout", refused),
        uri("http-streams-forever", http("/forever"), "too_large", refused),
        uri("http-huge-content-length", http("/huge-length"), "too_large", refused, says="Content-Length"),
        uri("http-gzip-bomb", http("/gzip"), "http_error", refused, says="Content-Encoding"),
        uri("http-404", http("/status/404"), "http_error", refused, says="HTTP 404"),
        uri("http-500", http("/status/500"), "http_error", refused, says="HTTP 500"),
        uri("http-html-instead-of-image", http("/page.html"), "not_an_image", refused, says="HTML"),
    ]
    # fmt: on


# --- checking ----------------------------------------------------------------------------------


@dataclass
class Tally:
    """What came out for a corpus; ``crashed`` counts internal errors and a dead worker."""

    tried: int = 0
    dead_lettered_correctly: int = 0
    decided_as_expected: int = 0
    crashed: int = 0
    wrong: list[str] = field(default_factory=list)

    def table(self, title: str) -> str:
        rows = [
            ("inputs tried", self.tried),
            ("dead-lettered correctly", self.dead_lettered_correctly),
            ("decided as expected", self.decided_as_expected),
            ("wrong or missing", len(self.wrong)),
            ("crashed", self.crashed),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [title, f"| {'':{width}} | count |", f"|{'-' * (width + 2)}|------:|"]
        lines += [f"| {name:{width}} | {count:5d} |" for name, count in rows]
        return "\n".join(lines)


def check(case: Case, kind: str, value: dict[str, Any], *, worker: bool) -> str | None:
    """None when ``value`` is what ``case`` should produce, else what is wrong."""
    expected = case.expected(worker)
    if expected == DECIDED:
        if kind != "decision" or value.get("verdict") not in ("unique", "similar", "duplicate"):
            return (
                f"{case.name}: expected a decision, got {kind} {value.get('reason')}: {value.get('message')}"
            )
        return None
    if kind != "dead_letter":
        return f"{case.name}: expected dead letter {expected}, got a decision {value.get('verdict')}"
    if value.get("reason") != expected:
        return f"{case.name}: expected {expected}, got {value.get('reason')}: {value.get('message')}"
    if not value.get("message") or value.get("stage") not in ("parse", "load"):
        return f"{case.name}: dead letter without message or stage: {value}"
    if case.says and (worker is False or case.worker_expect is None) and case.says not in value["message"]:
        return f"{case.name}: message {value['message']!r} does not say {case.says!r}"
    if value.get("key") != (None if case.key is None else _b64(case.key)):
        return f"{case.name}: dead letter key {value.get('key')!r} is not the input key"
    if len(case.value) <= DEAD_LETTER_INLINE_BYTES:
        if value.get("value") != _b64(case.value):
            return f"{case.name}: dead letter value is not the original value"
    else:
        ref = value.get("value_ref") or {}
        if (
            ref.get("size_bytes") != len(case.value)
            or ref.get("sha256") != hashlib.sha256(case.value).hexdigest()
        ):
            return f"{case.name}: value_ref {ref} does not describe the original value"
    return None


def tally(corpus: list[Case], records: dict[int, list[tuple[str, dict[str, Any]]]], *, worker: bool) -> Tally:
    """``records``: offset -> every (kind, value) that came out for the input at that offset."""
    result = Tally(tried=len(corpus))
    for offset, case in enumerate(corpus):
        got = records.get(offset, [])
        if len(got) != 1:
            result.wrong.append(f"{case.name}: {len(got)} records instead of exactly one")
            continue
        kind, value = got[0]
        if value.get("reason") == "internal_error":
            result.crashed += 1
        problem = check(case, kind, value, worker=worker)
        if problem:
            result.wrong.append(problem)
        elif kind == "decision":
            result.decided_as_expected += 1
        else:
            result.dead_lettered_correctly += 1
    return result


def report(title: str, corpus: list[Case], result: Tally, *, worker: bool) -> None:
    reasons = Counter(case.expected(worker) for case in corpus)
    print()
    print(result.table(title))
    print("expected outcomes:", ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items())))
    for problem in result.wrong:
        print("  WRONG", problem)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[HostileServer]:
    yield from hostile_server(small_jpeg())


@pytest.fixture
def corpus(tmp_path: Path, server: HostileServer) -> list[Case]:
    """The corpus in a fixed shuffled order, so good photos sit between bad inputs in every batch."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    cases = build_corpus(root, outside, server)
    random.Random(7).shuffle(cases)
    return cases


# --- (a) the pipeline on milvus-lite, one batch --------------------------------------------------


@pytest.fixture
def pipeline(tmp_path: Path, server: HostileServer) -> Iterator[DedupPipeline]:
    encoder = encoders.create("phash")
    store = MilvusStore(uri=str(tmp_path / "bad.db"), dim=encoder.dim, model_id=encoder.info.model_id)
    store.ensure_collection()
    fetcher = Fetcher(
        FetchPolicy(
            allow_roots=[tmp_path / "root"],
            allow_http=True,
            allow_private_networks=True,  # to reach the hostile server; its host:port is the only host
            allow_hosts=[f"127.0.0.1:{server.port}"],
            max_bytes=MAX_IMAGE_BYTES,
            timeout_s=FETCH_TIMEOUT_S,
        )
    )
    config = PipelineConfig(
        thresholds=ThresholdBook(default=Thresholds(duplicate=0.75, similar=0.6)),
        max_message_bytes=MAX_MESSAGE_BYTES,
        max_image_bytes=MAX_IMAGE_BYTES,
        max_pixels=MAX_PIXELS,
        decode_threads=8,  # the stalled URLs wait in parallel
    )
    pipe = DedupPipeline(encoder=encoder, store=store, fetcher=fetcher, config=config)
    yield pipe
    pipe.close()
    fetcher.close()
    store.close()


def test_every_bad_input_is_dead_lettered_with_its_reason_and_the_batch_is_decided(
    pipeline: DedupPipeline, corpus: list[Case]
) -> None:
    assert len(corpus) >= 40
    messages = [
        InboundMessage(case.key, case.value, Source("images", 0, offset), 1_700_000_000_000 + offset)
        for offset, case in enumerate(corpus)
    ]
    outgoing: list[Outgoing] = asyncio.run(pipeline.process(messages))
    records: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for record in outgoing:
        records.setdefault(record.value["source"]["offset"], []).append((record.kind, record.value))
    assert [r.value["source"]["offset"] for r in outgoing] == list(range(len(corpus)))  # input order
    result = tally(corpus, records, worker=False)
    report("pipeline (milvus-lite, one batch, no Kafka)", corpus, result, worker=False)
    assert result.wrong == []
    assert result.crashed == 0
    assert result.decided_as_expected == sum(c.expect == DECIDED for c in corpus)


# --- (b) a real worker on the real broker --------------------------------------------------------


async def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> list[int]:
    """Send all at once (so they share batches) to partition 0; the offset of each message."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=16 * 1024 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key, partition=0) for key, value in messages]
        return [metadata.offset for metadata in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


def test_worker_dead_letters_the_corpus_keeps_going_and_decides_what_follows(
    kafka_bootstrap: str,
    unique_name: str,
    tmp_path: Path,
    corpus: list[Case],
    server: HostileServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "DUPSTREAM_MAX_MESSAGE_BYTES", str(MAX_MESSAGE_BYTES)
    )  # the worker inherits os.environ
    monkeypatch.setenv("DUPSTREAM_MAX_IMAGE_BYTES", str(MAX_IMAGE_BYTES))
    monkeypatch.setenv("DUPSTREAM_MAX_PIXELS", str(MAX_PIXELS))
    topics = Topics.unique(unique_name)
    args = [
        "--allow-root",
        str(tmp_path / "root"),
        "--batch-size",
        "128",
        "--batch-wait",
        "1",
        "--allow-http",
    ]
    for host in ("127.0.0.1", "localhost", "169.254.169.254", "10.0.0.1"):  # allowed by name, not by address
        args += ["--allow-host", host]
    worker = WorkerProcess(
        kafka_bootstrap,
        topics,
        str(tmp_path / "w.db"),
        tmp_path / "w.log",
        model="test-tiny",
        extra_args=args,
    )
    worker.start()
    try:
        offsets = asyncio.run(_produce(kafka_bootstrap, topics.input, [(c.key, c.value) for c in corpus]))
        assert offsets == list(range(len(corpus)))
        first = collect(kafka_bootstrap, [topics.decisions, topics.dead], want=len(corpus), timeout_s=60)
        # One more good image after the corpus: once it is decided, everything before it is out
        # (one partition, and a batch's records are acknowledged before the next batch starts).
        after = event("after-the-corpus", data=jpeg(sample_photos()["coffee"].resize((256, 192))))
        (after_offset,) = asyncio.run(_produce(kafka_bootstrap, topics.input, [after]))
        out = collect(kafka_bootstrap, [topics.decisions, topics.dead], want=len(first) + 1, timeout_s=60)
        alive = worker.proc is not None and worker.proc.poll() is None and worker.get("/healthz")[0] == 200
    finally:
        exit_code = worker.stop()

    records: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for topic, value in out:
        kind = "decision" if topic == topics.decisions else "dead_letter"
        records.setdefault(value["source"]["offset"], []).append((kind, value))
    after_records = records.pop(after_offset, [])
    result = tally(corpus, records, worker=True)
    result.crashed += 0 if alive else 1
    report("worker (real broker, test-tiny)", corpus, result, worker=True)
    assert result.wrong == [], worker.log_tail()
    assert sorted(records) == list(range(len(corpus))), "records for offsets that were never produced"
    assert [(k, v.get("id")) for k, v in after_records] == [("decision", "after-the-corpus")], (
        worker.log_tail()
    )
    assert alive and result.crashed == 0, worker.log_tail()
    assert exit_code == 0, worker.log_tail()
    assert server.requests == []  # every URL to the loopback server was refused before connecting

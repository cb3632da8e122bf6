"""Parsing of the input event contract."""

from __future__ import annotations

import base64
import json

import pytest

from streams.errors import EventError
from streams.events import DeleteEvent, ImageEvent, InboundMessage, Source, parse_event

SRC = Source("images", 0, 7)


def msg(value: object, key: bytes | None = b"k1", ts: int = 1000) -> InboundMessage:
    if isinstance(value, dict | list):
        value = json.dumps(value).encode()
    return InboundMessage(key=key, value=value, source=SRC, timestamp_ms=ts)  # type: ignore[arg-type]


def test_uri_event_takes_id_tenant_and_metadata() -> None:
    event = parse_event(msg({"id": "a", "uri": "file:///x.jpg", "tenant": "t1", "metadata": {"u": 1}}))
    assert isinstance(event, ImageEvent)
    assert (event.id, event.tenant, event.uri, event.metadata) == ("a", "t1", "file:///x.jpg", {"u": 1})
    assert event.timestamp_ms == 1000  # falls back to the Kafka record timestamp


def test_data_event_decodes_base64() -> None:
    event = parse_event(msg({"id": "a", "data": base64.b64encode(b"\xff\xd8abc").decode()}))
    assert isinstance(event, ImageEvent) and event.data == b"\xff\xd8abc"


def test_raw_image_bytes_take_id_from_key() -> None:
    event = parse_event(msg(b"\x89PNG\r\n\x1a\nrest", key=b"img-9"))
    assert isinstance(event, ImageEvent) and event.id == "img-9" and event.data is not None


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (1700000000123, 1700000000123),
        ("2024-01-02T03:04:05Z", 1704164645000),
        ("2024-01-02T03:04:05.500+00:00", 1704164645500),
    ],
)
def test_timestamps_epoch_ms_and_iso(timestamp: object, expected: int) -> None:
    event = parse_event(msg({"id": "a", "uri": "file:///x", "timestamp": timestamp}))
    assert isinstance(event, ImageEvent) and event.timestamp_ms == expected


def test_tombstone_and_delete_op_are_deletes() -> None:
    assert isinstance(parse_event(msg(None, key=b"gone")), DeleteEvent)
    event = parse_event(msg({"id": "gone", "op": "delete", "tenant": "t"}))
    assert isinstance(event, DeleteEvent) and (event.id, event.tenant) == ("gone", "t")


@pytest.mark.parametrize(
    ("value", "key", "reason"),
    [
        (b'{"id": "a", "uri": ', b"k", "invalid_json"),
        (b"[1, 2]", b"k", "not_an_object"),
        (b'"just a string"', b"k", "not_an_object"),
        (b"123", b"k", "not_an_object"),
        ({"uri": "file:///x"}, None, "missing_id"),
        ({"id": "", "uri": "file:///x"}, b"k", "missing_id"),
        ({"id": 5, "uri": "file:///x"}, b"k", "bad_id"),
        ({"id": "x" * 300, "uri": "file:///x"}, b"k", "bad_id"),
        ({"id": "a\nb", "uri": "file:///x"}, b"k", "bad_id"),
        ({"id": "a", "uri": "file:///x", "colour": "red"}, b"k", "unknown_field"),
        ({"id": "a", "uri": "file:///x", "data": "AAAA"}, b"k", "both_uri_and_data"),
        ({"id": "a"}, b"k", "no_image"),
        ({"id": "a", "data": "not base64!!"}, b"k", "bad_base64"),
        ({"id": "a", "data": ""}, b"k", "empty"),
        ({"id": "a", "uri": "file:///x", "timestamp": "yesterday"}, b"k", "bad_timestamp"),
        ({"id": "a", "uri": "file:///x", "timestamp": "2024-01-02T03:04:05"}, b"k", "bad_timestamp"),
        ({"id": "a", "uri": "file:///x", "timestamp": True}, b"k", "bad_timestamp"),
        ({"id": "a", "uri": "file:///x", "tenant": ""}, b"k", "bad_tenant"),
        ({"id": "a", "uri": "file:///x", "metadata": [1]}, b"k", "bad_metadata"),
        ({"id": "a", "op": "update"}, b"k", "bad_op"),
        (b"", b"k", "empty"),
        (b"\x89PNG raw without key", None, "missing_id"),
        (None, None, "missing_id"),
        (b"\xff\xfe", b"\xff\xfe", "bad_id"),
    ],
)
def test_bad_events_raise_with_reason(value: object, key: bytes | None, reason: str) -> None:
    with pytest.raises(EventError) as info:
        parse_event(msg(value, key=key))
    assert info.value.reason == reason
    assert str(info.value)


def test_oversized_message_is_refused_before_parsing() -> None:
    with pytest.raises(EventError) as info:
        parse_event(msg(b"{" + b" " * 100), max_message_bytes=50)
    assert info.value.reason == "message_too_large"

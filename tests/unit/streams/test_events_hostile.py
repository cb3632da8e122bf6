"""Hostile event values that used to escape ``parse_event`` or slip through it."""

from __future__ import annotations

import pytest

from streams.errors import EventError
from streams.events import ImageEvent, InboundMessage, Source, parse_event


def parse(value: bytes, key: bytes | None = b"k") -> ImageEvent:
    event = parse_event(InboundMessage(key=key, value=value, source=Source("images", 0, 1), timestamp_ms=5))
    assert isinstance(event, ImageEvent)
    return event


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        # ints over 4300 digits make json.loads raise a plain ValueError
        (b'{"id": "a", "uri": "file:///x", "timestamp": ' + b"9" * 5000 + b"}", "invalid_json"),
        (b'{"id": ' + b"1" * 5000 + b"}", "invalid_json"),
        # NaN/Infinity are not JSON: accepted, they would come back out as invalid JSON
        (b'{"id": "a", "uri": "file:///x", "metadata": {"score": NaN}}', "invalid_json"),
        (b'{"id": "a", "uri": "file:///x", "timestamp": -Infinity}', "invalid_json"),
        (b"[" * 100_000, "invalid_json"),
        # lone surrogates parse into str but cannot be encoded into the decision
        (b'{"id": "a\\ud800", "uri": "file:///x"}', "bad_id"),
        (b'{"id": "a", "tenant": "t\\udfff", "uri": "file:///x"}', "bad_tenant"),
        (b'{"id": "a", "uri": "file:///x", "metadata": {"note": "\\ud800"}}', "bad_metadata"),
        (b'{"id": "a", "uri": "file:///\\ud800"}', "bad_uri"),
        # falsy non-objects used to pass as empty metadata
        (b'{"id": "a", "uri": "file:///x", "metadata": []}', "bad_metadata"),
        (b'{"id": "a", "uri": "file:///x", "metadata": ""}', "bad_metadata"),
        (b'{"id": "a", "uri": "file:///x", "metadata": 0}', "bad_metadata"),
        # ISO timestamps get the same range as epoch milliseconds
        (b'{"id": "a", "uri": "file:///x", "timestamp": "0001-01-01T00:00:00Z"}', "bad_timestamp"),
        # JSON scalars with surrounding whitespace or a sign are JSON, not raw image bytes
        (b"null\n", "not_an_object"),
        (b" true ", "not_an_object"),
        (b"-5", "not_an_object"),
        (b"1.5e3\r\n", "not_an_object"),
    ],
)
def test_hostile_values_get_a_precise_reason(value: bytes, reason: str) -> None:
    with pytest.raises(EventError) as info:
        parse(value)
    assert info.value.reason == reason


def test_plain_metadata_and_odd_ids_still_parse() -> None:
    event = parse('{"id": "图片 \\"1\\"", "uri": "file:///x", "metadata": {"a": [1, null]}}'.encode())
    assert event.id == '图片 "1"' and event.metadata == {"a": [1, None]}


def test_raw_bytes_starting_like_a_keyword_are_still_raw_bytes() -> None:
    assert parse(b"nope, raw bytes").data == b"nope, raw bytes"

"""The event contract: parse input messages, build decision and dead-letter payloads.

See docs/events.md for the full contract. Parsing is strict: a message that is not exactly a
valid event raises :class:`EventError` with a machine-readable reason, and goes to the
dead-letter topic.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from streams.errors import EventError

__all__ = [
    "DeleteEvent",
    "ImageEvent",
    "InboundMessage",
    "Source",
    "parse_event",
]

EVENT_FIELDS = frozenset({"id", "uri", "data", "tenant", "timestamp", "metadata", "op"})
MAX_ID_CHARS = 256
MAX_TENANT_CHARS = 128
MAX_TIMESTAMP_MS = 253402300799999  # 9999-12-31T23:59:59.999Z
_JSON_NUMBER = re.compile(rb"-?\d+(\.\d+)?([eE][+-]?\d+)?")


@dataclass(frozen=True)
class Source:
    """Where a message came from."""

    topic: str
    partition: int
    offset: int

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True)
class InboundMessage:
    """A Kafka record as the pipeline sees it (no client types cross this boundary)."""

    key: bytes | None
    value: bytes | None
    source: Source
    timestamp_ms: int


@dataclass(frozen=True)
class ImageEvent:
    """An image to decide. Exactly one of ``uri`` and ``data`` is set."""

    id: str
    tenant: str
    timestamp_ms: int
    source: Source
    uri: str | None = None
    data: bytes | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def order_key(self) -> tuple[int, str]:
        """Total order of images within a tenant: earlier (timestamp, id) comes first."""
        return (self.timestamp_ms, self.id)


@dataclass(frozen=True)
class DeleteEvent:
    """Remove ``id`` from the index (a tombstone or ``{"op": "delete"}``)."""

    id: str
    tenant: str
    source: Source
    metadata: dict[str, Any] = field(default_factory=dict)


def _key_id(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventError(
            "message key is not UTF-8; the key must be the image id as text", reason="bad_id"
        ) from exc
    return text or None


def _is_utf8(text: str) -> bool:
    """False for strings with lone surrogates (JSON ``"\\ud800"``): they cannot be written back out."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_id(value: Any, what: str = "id") -> str:
    if not isinstance(value, str):
        raise EventError(f"{what} must be a string, got {type(value).__name__}", reason="bad_id")
    if not _is_utf8(value):
        raise EventError(f"{what} contains a lone UTF-16 surrogate (not valid Unicode text)", reason="bad_id")
    if not value.strip():
        raise EventError(f"{what} is empty", reason="missing_id")
    if len(value) > MAX_ID_CHARS:
        raise EventError(
            f"{what} has {len(value)} characters; at most {MAX_ID_CHARS} are allowed", reason="bad_id"
        )
    if any(ord(ch) < 32 for ch in value):
        raise EventError(f"{what} contains control characters", reason="bad_id")
    return value


def _parse_timestamp(value: Any, fallback_ms: int) -> int:
    if value is None:
        return fallback_ms
    if isinstance(value, bool):
        raise EventError(
            "timestamp must be epoch milliseconds or ISO-8601, got a boolean", reason="bad_timestamp"
        )
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0 or value > MAX_TIMESTAMP_MS:
            raise EventError(
                f"timestamp {value!r} is out of range (epoch milliseconds expected)", reason="bad_timestamp"
            )
        return int(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise EventError(f"timestamp {value[:64]!r} is not ISO-8601", reason="bad_timestamp") from exc
        if parsed.tzinfo is None:
            raise EventError(
                f"timestamp {value[:64]!r} has no time zone; add Z or +00:00", reason="bad_timestamp"
            )
        epoch_ms = int(parsed.timestamp() * 1000)
        if not 0 <= epoch_ms <= MAX_TIMESTAMP_MS:
            raise EventError(
                f"timestamp {value[:64]!r} is before 1970 or after 9999 (UTC)", reason="bad_timestamp"
            )
        return epoch_ms
    raise EventError(
        f"timestamp must be a number or a string, got {type(value).__name__}", reason="bad_timestamp"
    )


def _looks_like_json(value: bytes) -> bool:
    head = value[:64].lstrip()
    if head[:1] in (b"{", b"[", b'"'):
        return True
    if head[:1] not in (b"n", b"t", b"f", b"-") and not head[:1].isdigit():  # no image starts so
        return False
    stripped = value.strip()
    return stripped in (b"null", b"true", b"false") or _JSON_NUMBER.fullmatch(stripped) is not None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


def parse_event(
    message: InboundMessage,
    *,
    default_tenant: str = "default",
    max_message_bytes: int = 16 * 1024 * 1024,
) -> ImageEvent | DeleteEvent:
    """Turn a message into an event or raise :class:`EventError` saying why it is not one."""
    key_id = _key_id(message.key)
    value = message.value
    if value is None:
        if key_id is None:
            raise EventError("tombstone (null value) without a key: nothing to delete", reason="missing_id")
        return DeleteEvent(id=_check_id(key_id, "key"), tenant=default_tenant, source=message.source)
    if len(value) > max_message_bytes:
        raise EventError(
            f"message is {len(value)} bytes; the limit is {max_message_bytes} (send a uri instead of data)",
            reason="message_too_large",
        )
    if len(value) == 0:
        raise EventError("message value is empty: expected a JSON event or image bytes", reason="empty")
    if not _looks_like_json(value):
        if key_id is None:
            raise EventError("raw image bytes need the image id as the message key", reason="missing_id")
        return ImageEvent(
            id=_check_id(key_id, "key"),
            tenant=default_tenant,
            timestamp_ms=message.timestamp_ms,
            source=message.source,
            data=value,
        )
    try:
        body = json.loads(value, parse_constant=_refuse_constant)  # NaN would make invalid output JSON
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, int > 4300 digits
        raise EventError(f"value is not valid JSON: {exc}"[:300], reason="invalid_json") from exc
    if not isinstance(body, dict):
        raise EventError(f"JSON value must be an object, got {type(body).__name__}", reason="not_an_object")
    unknown = sorted(set(body) - EVENT_FIELDS)
    if unknown:
        raise EventError(
            f"unknown field(s) {', '.join(repr(u[:40]) for u in unknown[:5])}; allowed: "
            f"{', '.join(sorted(EVENT_FIELDS))} (put extra data in 'metadata')",
            reason="unknown_field",
        )
    if "id" not in body and key_id is None:
        raise EventError("event has no 'id' and the message has no key", reason="missing_id")
    event_id = _check_id(body["id"]) if "id" in body else _check_id(key_id, "key")
    tenant = body.get("tenant", default_tenant)
    if tenant is None:
        tenant = default_tenant
    if not isinstance(tenant, str) or not tenant or len(tenant) > MAX_TENANT_CHARS or not _is_utf8(tenant):
        raise EventError(
            f"tenant must be a non-empty string of at most {MAX_TENANT_CHARS} characters", reason="bad_tenant"
        )
    metadata = body.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise EventError(f"metadata must be an object, got {type(metadata).__name__}", reason="bad_metadata")
    if metadata and not _is_utf8(json.dumps(metadata, ensure_ascii=False)):
        raise EventError(
            "metadata contains a lone UTF-16 surrogate (not valid Unicode text)", reason="bad_metadata"
        )
    op = body.get("op")
    if op is not None:
        if op != "delete":
            raise EventError(
                f"op {str(op)[:40]!r} is not supported; the only op is 'delete'", reason="bad_op"
            )
        return DeleteEvent(id=event_id, tenant=tenant, source=message.source, metadata=metadata)
    timestamp_ms = _parse_timestamp(body.get("timestamp"), message.timestamp_ms)
    uri, data = body.get("uri"), body.get("data")
    if uri is not None and data is not None:
        raise EventError("event has both 'uri' and 'data'; send exactly one", reason="both_uri_and_data")
    if uri is None and data is None:
        raise EventError("event has neither 'uri' nor 'data'; send exactly one", reason="no_image")
    if uri is not None:
        if not isinstance(uri, str) or not uri or not _is_utf8(uri):
            raise EventError("uri must be a non-empty string of valid Unicode text", reason="bad_uri")
        return ImageEvent(
            id=event_id,
            tenant=tenant,
            timestamp_ms=timestamp_ms,
            source=message.source,
            uri=uri,
            metadata=metadata,
        )
    if not isinstance(data, str):
        raise EventError(f"data must be a base64 string, got {type(data).__name__}", reason="bad_base64")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EventError(f"data is not valid base64: {exc}", reason="bad_base64") from exc
    if not raw:
        raise EventError("data decodes to zero bytes", reason="empty")
    return ImageEvent(
        id=event_id,
        tenant=tenant,
        timestamp_ms=timestamp_ms,
        source=message.source,
        data=raw,
        metadata=metadata,
    )

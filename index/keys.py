"""Primary keys and the limits on the strings that make them.

The primary key joins tenant and image id with a length prefix, ``f"{len(tenant)}:{tenant}:{image_id}"``,
so no choice of strings can make two different pairs collide (``("a:b", "c")`` and ``("a", "b:c")``
give ``3:a:b:c`` and ``1:a:b:c``). Lengths are checked in UTF-8 bytes, which is how Milvus counts
``max_length``.
"""

from __future__ import annotations

from index.errors import IndexRequestError

__all__ = [
    "MAX_HASH_BYTES",
    "MAX_IMAGE_ID_BYTES",
    "MAX_PK_BYTES",
    "MAX_TENANT_BYTES",
    "check_hash",
    "check_id",
    "make_pk",
    "split_pk",
]

MAX_TENANT_BYTES = 128
MAX_IMAGE_ID_BYTES = 256
MAX_HASH_BYTES = 64
MAX_PK_BYTES = 512  # >= len("128:") + 128 + len(":") + 256; the VARCHAR max_length of `pk`


def _utf8_len(value: str, what: str) -> int:
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:  # lone surrogates cannot be stored by Milvus
        raise IndexRequestError(f"{what} must be valid Unicode text, got {value!r}") from exc


def check_id(value: object, what: str, max_bytes: int) -> str:
    """Return ``value`` if it is a non-empty string of at most ``max_bytes`` UTF-8 bytes."""
    if not isinstance(value, str):
        raise IndexRequestError(f"{what} must be a str, got {type(value).__name__}")
    size = _utf8_len(value, what)
    if size == 0:
        raise IndexRequestError(f"{what} must not be empty")
    if size > max_bytes:
        raise IndexRequestError(
            f"{what} is {size} UTF-8 bytes, at most {max_bytes} allowed: {value[:40]!r}..."
        )
    return value


def check_hash(value: object, what: str) -> str:
    """A hash may be empty (unknown) but not longer than a sha256 hex digest."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise IndexRequestError(f"{what} must be a str, got {type(value).__name__}")
    if _utf8_len(value, what) > MAX_HASH_BYTES:
        raise IndexRequestError(f"{what} must be at most {MAX_HASH_BYTES} bytes (hex sha256), got {value!r}")
    return value


def make_pk(tenant: str, image_id: str) -> str:
    """The primary key of ``(tenant, image_id)``; validates both."""
    check_id(tenant, "tenant", MAX_TENANT_BYTES)
    check_id(image_id, "image_id", MAX_IMAGE_ID_BYTES)
    return f"{len(tenant)}:{tenant}:{image_id}"


def split_pk(pk: str) -> tuple[str, str]:
    """Inverse of :func:`make_pk`."""
    prefix, sep, rest = pk.partition(":")
    if not sep or not prefix.isdigit():
        raise ValueError(f"not a dupstream primary key: {pk!r}")
    size = int(prefix)
    if len(rest) < size + 1 or rest[size] != ":":
        raise ValueError(f"not a dupstream primary key: {pk!r}")
    return rest[:size], rest[size + 1 :]

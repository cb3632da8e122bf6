"""Errors raised by the index package.

Every error carries a machine-readable ``reason`` (a bounded metric label and dead-letter reason)
and a ``retriable`` flag. pymilvus exceptions are translated once, in :mod:`index.store`, with
``raise ... from exc``; nothing else in the package lets a pymilvus exception escape.

The base class is ``IndexStoreError``, not ``IndexError``: that name would shadow the builtin
``IndexError`` in every module that imports it.
"""

from __future__ import annotations

from encoders.errors import DupstreamError

__all__ = [
    "IndexRequestError",
    "IndexSchemaError",
    "IndexStoreError",
    "IndexUnavailableError",
]


class IndexStoreError(DupstreamError):
    """The vector index failed. Reasons: ``index_error`` (the backend refused the call)."""

    reason = "index_error"


class IndexUnavailableError(IndexStoreError):
    """Milvus cannot be reached, timed out, or is rate-limiting; trying again later can help."""

    reason = "index_unavailable"
    retriable = True


class IndexSchemaError(IndexStoreError):
    """The collection does not match what this store expects.

    Reasons: ``schema_mismatch`` (dim, metric, model id or fields differ from the existing
    collection), ``collection_missing`` (``ensure_collection()`` was not called, or the
    collection was dropped underneath us).
    """

    reason = "schema_mismatch"


class IndexRequestError(IndexStoreError, ValueError):
    """An argument is invalid (wrong vector shape, an id too long, a bad option).

    Reason: ``invalid_argument``. Retrying the same call cannot help.
    """

    reason = "invalid_argument"

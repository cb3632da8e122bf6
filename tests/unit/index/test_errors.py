"""pymilvus and gRPC failures become index errors with the right reason and retriable flag."""

from __future__ import annotations

import grpc
import pytest
from pymilvus.exceptions import (
    CollectionNotExistException,
    MilvusException,
    MilvusUnavailableException,
    ParamError,
)

from encoders.errors import DupstreamError
from index import IndexRequestError, IndexSchemaError, IndexStoreError, IndexUnavailableError
from index.store import _redact, translate


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


def chained(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    ("exc", "cls", "reason", "retriable"),
    [
        (
            MilvusException(code=2, message="Fail connecting to server"),
            IndexUnavailableError,
            "index_unavailable",
            True,
        ),
        (MilvusUnavailableException(message="down"), IndexUnavailableError, "index_unavailable", True),
        (
            MilvusException(code=8, message="rate limit exceeded"),
            IndexUnavailableError,
            "index_unavailable",
            True,
        ),
        (
            MilvusException(code=grpc.StatusCode.DEADLINE_EXCEEDED, message="Retry timeout: 10s"),
            IndexUnavailableError,
            "index_unavailable",
            True,
        ),
        (
            chained(MilvusException(code=1, message="x"), FakeRpcError(grpc.StatusCode.UNAVAILABLE)),
            IndexUnavailableError,
            "index_unavailable",
            True,
        ),
        (CollectionNotExistException(message="gone"), IndexSchemaError, "collection_missing", False),
        (
            MilvusException(code=100, message="collection not found"),
            IndexSchemaError,
            "collection_missing",
            False,
        ),
        (ParamError(message="bad"), IndexRequestError, "invalid_argument", False),
        (MilvusException(code=1100, message="index type not match"), IndexStoreError, "index_error", False),
        (MilvusException(code=6, message="unexpected character"), IndexStoreError, "index_error", False),
    ],
    ids=[
        "connect-failed",
        "unavailable",
        "rate-limit",
        "deadline",
        "grpc-cause",
        "no-collection",
        "no-collection-code",
        "param",
        "refused",
        "filter-parse",
    ],
)
def test_translate_maps_backend_errors(exc: BaseException, cls: type, reason: str, retriable: bool) -> None:
    err = translate(exc, op="search", collection="c", where="http://127.0.0.1:19530")
    assert type(err) is cls
    assert (err.reason, err.retriable) == (reason, retriable)
    assert isinstance(err, DupstreamError)
    assert "'c'" in str(err)


def test_messages_never_carry_credentials() -> None:
    assert _redact("https://user:secret@db.example:19530/db") == "https://db.example:19530/db"
    assert _redact("./dupstream.db") == "./dupstream.db"

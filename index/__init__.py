"""The vector index: image embeddings in Milvus (milvus-lite file or server), searched per tenant.

    >>> from index import IndexRecord, MilvusStore
    >>> store = MilvusStore(uri="./dupstream.db", dim=512, model_id="sscd-mini@1")
    >>> store.ensure_collection()
    >>> store.upsert([IndexRecord(tenant="t", image_id="a", ts=1, vector=v)])
    >>> store.search(vectors, tenants=["t"], before=[(2, "b")], top_k=10)   # [[Match, ...]]

Importing this package does not import pymilvus or touch the network.
"""

from index.errors import IndexRequestError, IndexSchemaError, IndexStoreError, IndexUnavailableError
from index.keys import make_pk
from index.records import IndexRecord, Match
from index.store import MilvusStore

__all__ = [
    "IndexRecord",
    "IndexRequestError",
    "IndexSchemaError",
    "IndexStoreError",
    "IndexUnavailableError",
    "Match",
    "MilvusStore",
    "make_pk",
]

"""Milvus filter expressions built from untrusted strings.

Tenants and image ids come from users, so every string goes through :func:`quote`. Filter
templating (``filter_params``) would be nicer, but neither backend we run supports it:
milvus-lite 3.2 rejects ``{name}`` placeholders and Milvus 2.3 predates expression templates.

:func:`quote` writes a double-quoted literal that both grammars read back unchanged: Milvus
(ANTLR ``StringLiteral`` then Go ``strconv.Unquote``) and milvus-lite (its own tokenizer, which
knows only ``\\" \\' \\\\ \\n \\r \\t``). Backslash, double quote, CR, LF and TAB are escaped; every
other character, quotes ``'`` and control characters included, is legal inside the literal as is.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["before_expr", "in_expr", "order_key_lt", "quote", "tenant_expr"]

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_TABLE = str.maketrans(_ESCAPES)


def quote(value: str) -> str:
    """``value`` as a double-quoted filter-expression string literal."""
    if not isinstance(value, str):
        raise TypeError(f"quote() needs a str, got {type(value).__name__}")
    return '"' + value.translate(_TABLE) + '"'


def tenant_expr(tenant: str) -> str:
    return f"tenant == {quote(tenant)}"


def in_expr(field: str, values: Iterable[str]) -> str:
    return f"{field} in [{', '.join(quote(v) for v in values)}]"


def before_expr(ts: int, image_id: str) -> str:
    """Records strictly earlier than ``(ts, image_id)``: ``ts < T`` or ``ts == T and image_id < ID``.

    Milvus compares VARCHAR by UTF-8 bytes and Python compares ``str`` by code point; the two
    orders agree, so :func:`order_key_lt` can re-check a result in Python.
    """
    ts = int(ts)
    return f"(ts < {ts} or (ts == {ts} and image_id < {quote(image_id)}))"


def order_key_lt(a: tuple[int, str], b: tuple[int, str]) -> bool:
    """``a`` comes strictly before ``b`` in the ``(ts, image_id)`` order."""
    return (a[0], a[1]) < (b[0], b[1])

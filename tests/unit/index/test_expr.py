"""Filter-expression literals built from hostile strings read back as the same data."""

from __future__ import annotations

import re

import pytest

from index.expr import before_expr, in_expr, quote, tenant_expr

HOSTILE = [
    "",
    "plain",
    'dq"',
    "sq'",
    "bs\\",
    "\\",
    '\\"',
    "\\'",
    '"',
    "''",
    "\\n (not a newline)",
    "real\nnewline",
    "cr\r",
    "tab\t",
    "nul\x00",
    "esc\x1b[31m",
    "del\x7f",
    '" or tenant != "',
    "' or 1 == 1 or tenant == '",
    '") or true or ("',
    "ünïcødé ✓ 画像 🙂",
    "${x} {name} %s",
]

_GO_SIMPLE = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
}


def go_unquote(literal: str) -> str:
    """Go's ``strconv.Unquote`` for a double-quoted literal (what Milvus applies to strings)."""
    assert literal[0] == literal[-1] == '"' and len(literal) >= 2
    body, out, i = literal[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        assert ch not in '"\n', f"unescaped {ch!r} ends or breaks the literal"
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        esc = body[i + 1]
        assert esc in _GO_SIMPLE, f"escape \\{esc} is invalid in a Go double-quoted string"
        out.append(_GO_SIMPLE[esc])
        i += 2
    return "".join(out)


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_quote_round_trips_through_the_server_grammar(value: str) -> None:
    literal = quote(value)
    assert "\n" not in literal and "\r" not in literal
    assert go_unquote(literal) == value


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_quote_round_trips_through_the_milvus_lite_parser(value: str) -> None:
    parser = pytest.importorskip("milvus_lite.search.filter")
    ast = parser.parse_expr(tenant_expr(value))
    assert type(ast).__name__ == "CmpOp"
    assert (ast.op, ast.left.name, ast.right.value) == ("==", "tenant", value)


def test_hostile_value_stays_one_literal_in_compound_expressions() -> None:
    parser = pytest.importorskip("milvus_lite.search.filter")
    values = ['a" or "1" == "1', "b\\", "c'"]
    ast = parser.parse_expr(in_expr("pk", values))
    assert [e.value for e in ast.values.elements] == values
    ast = parser.parse_expr(before_expr(7, '" or ts > 0 or "'))
    assert type(ast).__name__ == "Or" and len(ast.operands) == 2


def test_before_expression_is_strict_on_both_keys() -> None:
    assert before_expr(1700000000123, "img-9") == (
        '(ts < 1700000000123 or (ts == 1700000000123 and image_id < "img-9"))'
    )


def test_quote_refuses_non_strings() -> None:
    with pytest.raises(TypeError):
        quote(5)  # type: ignore[arg-type]


def test_nothing_outside_the_literal_depends_on_the_value() -> None:
    for value in HOSTILE:
        assert re.fullmatch(r'tenant == ".*"', tenant_expr(value), flags=re.DOTALL)

"""Grouping a batch of searches and proving each query's answer complete."""

from __future__ import annotations

from index.plan import MAX_LIMIT, loosest, plan_groups, rank, select
from index.records import Match


def m(image_id: str, ts: int, score: float) -> Match:
    return Match(tenant="t", image_id=image_id, ts=ts, score=score)


def test_queries_of_one_tenant_share_one_call_with_the_loosest_bound() -> None:
    groups = plan_groups(["a", "b", "a", "a"], [(5, "x"), (1, "y"), (9, "a"), (9, "b")], limit=10)
    assert [(g.tenant, g.rows, g.bound, g.limit) for g in groups] == [
        ("a", (0, 2, 3), (9, "b"), 10),
        ("b", (1,), (1, "y"), 10),
    ]


def test_unbounded_queries_are_grouped_apart_from_bounded_ones() -> None:
    groups = plan_groups(["a", "a", "a"], [(5, "x"), None, (6, "y")], limit=3)
    assert [(g.rows, g.bound) for g in groups] == [((0, 2), (6, "y")), ((1,), None)]
    assert [g.bound for g in plan_groups(["a", "b"], None, limit=3)] == [None, None]


def test_limit_never_exceeds_the_milvus_maximum() -> None:
    [group] = plan_groups(["a"] * 3, [(i, "x") for i in range(3)], limit=MAX_LIMIT + 5)
    assert group.limit == MAX_LIMIT


def test_loosest_orders_by_ts_then_id() -> None:
    assert loosest([(3, "b"), (3, "c"), (2, "z")]) == (3, "c")


def test_rank_breaks_score_ties_by_order_key() -> None:
    ranked = rank([m("b", 2, 0.5), m("a", 2, 0.5), m("c", 1, 0.5), m("d", 9, 0.9)])
    assert [x.image_id for x in ranked] == ["d", "c", "a", "b"]


def test_select_keeps_only_strictly_earlier_hits() -> None:
    hits = [m("self", 5, 1.0), m("later", 6, 0.9), m("tie-later", 5, 0.8), m("early", 4, 0.7), m("a", 5, 0.6)]
    kept, complete = select(hits, before=(5, "self"), top_k=10, min_score=None, limit=20)
    assert [x.image_id for x in kept] == ["early", "a"]
    assert complete  # fewer hits than the limit: the loose call returned everything


def test_select_is_complete_when_enough_hits_survive() -> None:
    hits = [m(f"i{k}", k, 1.0 - k / 100) for k in range(5)]
    kept, complete = select(hits, before=(10, "z"), top_k=3, min_score=None, limit=5)
    assert complete and [x.image_id for x in kept] == ["i0", "i1", "i2"]


def test_select_asks_for_an_exact_search_when_the_call_was_saturated() -> None:
    hits = [m("later1", 9, 0.99), m("later2", 8, 0.98), m("early", 1, 0.5)]
    kept, complete = select(hits, before=(5, "q"), top_k=2, min_score=None, limit=3)
    assert not complete and [x.image_id for x in kept] == ["early"]


def test_min_score_proves_completeness_when_the_tail_is_too_weak() -> None:
    hits = [m("later", 9, 0.99), m("early", 1, 0.95), m("weak", 2, 0.2)]
    kept, complete = select(hits, before=(5, "q"), top_k=5, min_score=0.9, limit=3)
    assert complete and [x.image_id for x in kept] == ["early"]
    _, complete = select(hits[:2], before=(5, "q"), top_k=5, min_score=0.9, limit=2)
    assert not complete  # every fetched hit passes the cut-off: more may exist


def test_select_without_bound_keeps_everything() -> None:
    hits = [m("a", 1, 0.3), m("b", 2, 0.9)]
    kept, complete = select(hits, before=None, top_k=1, min_score=None, limit=1)
    assert complete and [x.image_id for x in kept] == ["b"]

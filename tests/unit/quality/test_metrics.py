"""DISC21 metrics on hand-made cases."""

from __future__ import annotations

import random

import numpy as np
import pytest

from streams.quality.metrics import (
    Prediction,
    calibrate_threshold,
    highest_threshold_for_recall,
    micro_average_precision,
    operating_point,
    recall_at_1,
    recall_at_precision,
    top_k,
)

P = Prediction

# q1 -> r1 and q2 -> r2 have references; q3 is a negative (no reference).
TRUTH = {"q1": "r1", "q2": "r2", "q3": None}
# Pooled and sorted: right (0.9), wrong (0.8), right (0.7), wrong (0.6).
PREDS = [P("q1", "r1", 0.9), P("q3", "r5", 0.8), P("q2", "r2", 0.7), P("q2", "r9", 0.6)]


def test_micro_ap_averages_precision_at_each_right_prediction_over_positives() -> None:
    assert micro_average_precision(PREDS, TRUTH) == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_perfect_ranking_scores_one() -> None:
    preds = [P("q1", "r1", 0.9), P("q2", "r2", 0.8), P("q3", "r1", 0.1)]
    assert micro_average_precision(preds, TRUTH) == pytest.approx(1.0)


def test_query_without_its_reference_in_the_predictions_costs_recall() -> None:
    preds = [P("q1", "r1", 0.9), P("q2", "r7", 0.8)]
    assert micro_average_precision(preds, TRUTH) == pytest.approx(0.5)


def test_ties_are_broken_pessimistically() -> None:
    preds = [P("q1", "r1", 0.5), P("q3", "r2", 0.5)]
    assert micro_average_precision(preds, {"q1": "r1", "q3": None}) == pytest.approx(0.5)


def test_only_top_k_predictions_per_query_count() -> None:
    preds = [P("q1", f"x{i}", 0.9 - i / 100) for i in range(10)] + [P("q1", "r1", 0.5)]
    assert micro_average_precision(preds, {"q1": "r1"}, k=10) == 0.0
    assert micro_average_precision(preds, {"q1": "r1"}, k=11) == pytest.approx(1 / 11)


def test_repeated_pairs_keep_their_best_score() -> None:
    assert top_k([P("q", "r", 0.2), P("q", "r", 0.7)]) == [P("q", "r", 0.7)]


def test_micro_ap_matches_sklearn_average_precision_when_every_reference_is_predicted() -> None:
    from sklearn.metrics import average_precision_score

    rng = random.Random(3)
    truth = {f"q{i}": (f"r{i}" if i < 30 else None) for i in range(50)}
    preds = []
    for query, ref in truth.items():
        if ref is not None:
            preds.append(P(query, ref, rng.random()))
        preds += [P(query, f"d{query}{j}", rng.random()) for j in range(3)]
    labels = [truth[p.query] == p.ref for p in preds]
    expected = average_precision_score(labels, [p.score for p in preds])
    assert micro_average_precision(preds, truth) == pytest.approx(expected)


def test_recall_at_precision_takes_the_best_recall_meeting_the_precision() -> None:
    assert recall_at_precision(PREDS, TRUTH, 0.9) == pytest.approx(0.5)
    assert recall_at_precision(PREDS, TRUTH, 0.6) == pytest.approx(1.0)
    assert recall_at_precision([P("q3", "r1", 0.9)], TRUTH, 0.9) == 0.0


def test_recall_at_1_counts_positive_queries_whose_best_prediction_is_right() -> None:
    preds = [P("q1", "r1", 0.9), P("q2", "r9", 0.8), P("q2", "r2", 0.7), P("q3", "r1", 0.99)]
    assert recall_at_1(preds, TRUTH) == pytest.approx(0.5)


def test_operating_point_counts_calls_on_best_predictions() -> None:
    op = operating_point(PREDS, TRUTH, 0.75)
    assert (op.true_calls, op.false_calls) == (1, 1)
    assert op.precision == pytest.approx(0.5)
    assert op.recall == pytest.approx(0.5)
    assert op.f1 == pytest.approx(0.5)
    assert op.false_duplicate_rate_negatives == pytest.approx(1.0)
    assert np.isnan(op.false_duplicate_rate_hard_negatives)


def test_hard_negatives_are_counted_apart() -> None:
    truth = {"q1": "r1", "n1": None, "h1": None, "h2": None}
    preds = [P("q1", "r1", 0.9), P("n1", "r2", 0.1), P("h1", "r1", 0.8), P("h2", "r1", 0.2)]
    op = operating_point(preds, truth, 0.5, hard_negatives=["h1", "h2"])
    assert op.false_duplicate_rate_hard_negatives == pytest.approx(0.5)
    assert op.false_duplicate_rate_negatives == pytest.approx(0.0)
    assert (op.negatives, op.hard_negatives, op.positives) == (1, 2, 1)


def test_call_against_the_wrong_reference_is_a_false_call_and_not_recall() -> None:
    op = operating_point([P("q1", "r2", 0.9)], {"q1": "r1"}, 0.5)
    assert (op.true_calls, op.false_calls, op.recall, op.precision) == (0, 1, 0.0, 0.0)


def test_no_calls_means_precision_one_and_recall_zero() -> None:
    op = operating_point(PREDS, TRUTH, 0.95)
    assert (op.precision, op.recall, op.f1) == (1.0, 0.0, 0.0)


def test_calibration_picks_the_lowest_threshold_meeting_precision() -> None:
    truth = {f"p{i}": f"r{i}" for i in range(4)} | {"n0": None, "n1": None}
    preds = [
        P("p0", "r0", 0.95),
        P("p1", "r1", 0.90),
        P("n0", "r0", 0.85),  # a negative above two positives
        P("p2", "r2", 0.80),
        P("p3", "r3", 0.70),
        P("n1", "r0", 0.60),
    ]
    # unweighted: at 0.90 precision 1.0; at 0.80 3/4; at 0.70 4/5; at 0.60 4/6
    assert calibrate_threshold(preds, truth, 0.99, balanced=False) == pytest.approx(0.90)
    assert calibrate_threshold(preds, truth, 0.75, balanced=False) == pytest.approx(0.70)
    # balanced: each negative weighs 4/2 = 2, so 0.70 gives 4 / (4 + 2) < 0.75
    assert calibrate_threshold(preds, truth, 0.75, balanced=True) == pytest.approx(0.90)


def test_calibration_above_every_score_when_precision_is_never_met() -> None:
    threshold = calibrate_threshold([P("n0", "r0", 0.9)], {"n0": None, "p0": "r0"}, 0.99)
    assert threshold > 0.9


def test_highest_threshold_keeping_a_recall() -> None:
    truth = {"p0": "r0", "p1": "r1", "p2": "r2", "p3": "r3", "n0": None}
    preds = [
        P("p0", "r0", 0.9),
        P("p1", "r1", 0.8),
        P("p2", "r2", 0.6),
        P("p3", "rx", 0.95),
        P("n0", "r0", 0.99),
    ]
    assert highest_threshold_for_recall(preds, truth, 0.5) == pytest.approx(0.8)
    assert highest_threshold_for_recall(preds, truth, 0.75) == pytest.approx(0.6)
    assert highest_threshold_for_recall(preds, truth, 1.0) is None  # p3's best prediction is wrong

"""Copy-detection metrics with the DISC21 / ISC2021 definitions, plus an operating point.

* **µAP** (micro-average precision): every (query, reference, score) prediction of every query
  is pooled and sorted by descending score; walking down the list, each correct prediction adds
  its precision at that rank; the sum is divided by the number of queries that have a reference
  (queries without one only add false positives). At most ``k = 10`` predictions per query count.
  Ties in score are broken pessimistically (wrong predictions first), so a coarse score such as
  a 64-bit hash distance gets no credit from lucky ordering.
* **recall at precision p**: the highest recall over all thresholds whose precision is >= p
  (DISC21 reports p = 0.9).
* **recall@1**: the share of positive queries whose best prediction is their reference.
* **operating point** at a threshold ``t``: a query is *called* a duplicate when its best
  prediction scores >= t. precision = right calls / calls; recall = right calls / positive
  queries; F1; the false-duplicate rate = calls / queries among negatives and, separately,
  among hard negatives. A positive query called against the wrong reference is a false call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "OperatingPoint",
    "Prediction",
    "best_per_query",
    "calibrate_threshold",
    "highest_threshold_for_recall",
    "micro_average_precision",
    "operating_point",
    "pr_curve",
    "recall_at_1",
    "recall_at_precision",
    "top_k",
]

GroundTruth = Mapping[str, str | None]


@dataclass(frozen=True)
class Prediction:
    query: str
    ref: str
    score: float


def top_k(predictions: Iterable[Prediction], k: int = 10) -> list[Prediction]:
    """The ``k`` best distinct references per query (duplicates keep their highest score)."""
    best: dict[tuple[str, str], float] = {}
    for p in predictions:
        key = (p.query, p.ref)
        if key not in best or p.score > best[key]:
            best[key] = p.score
    per_query: dict[str, list[Prediction]] = {}
    for (query, ref), score in best.items():
        per_query.setdefault(query, []).append(Prediction(query, ref, score))
    out: list[Prediction] = []
    for query in sorted(per_query):
        ranked = sorted(per_query[query], key=lambda p: (-p.score, p.ref))
        out.extend(ranked[:k])
    return out


def _positives(ground_truth: GroundTruth) -> int:
    return sum(ref is not None for ref in ground_truth.values())


def pr_curve(
    predictions: Iterable[Prediction], ground_truth: GroundTruth, *, k: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, score) after each prediction of the pooled, sorted top-k list.

    Only predictions of queries in ``ground_truth`` are counted.
    """
    preds = [p for p in top_k(predictions, k) if p.query in ground_truth]
    correct = np.array([ground_truth[p.query] == p.ref for p in preds], dtype=bool)
    scores = np.array([p.score for p in preds], dtype=np.float64)
    order = np.lexsort((correct, -scores))  # by score desc, then wrong before right (pessimistic)
    correct, scores = correct[order], scores[order]
    n_pos = max(_positives(ground_truth), 1)
    tp = np.cumsum(correct)
    ranks = np.arange(1, len(correct) + 1)
    precision = tp / np.maximum(ranks, 1)
    recall = tp / n_pos
    return precision, recall, scores


def micro_average_precision(
    predictions: Iterable[Prediction], ground_truth: GroundTruth, *, k: int = 10
) -> float:
    """DISC21 µAP over the pooled top-``k`` predictions (see the module docstring)."""
    if _positives(ground_truth) == 0:
        return float("nan")
    precision, recall, _ = pr_curve(predictions, ground_truth, k=k)
    if len(precision) == 0:
        return 0.0
    gained = np.diff(recall, prepend=0.0)
    return float(np.sum(gained * precision))


def recall_at_precision(
    predictions: Iterable[Prediction],
    ground_truth: GroundTruth,
    precision_target: float = 0.9,
    *,
    k: int = 10,
) -> float:
    """Highest recall at a threshold whose precision is >= ``precision_target``.

    Thresholds are taken at the end of each run of equal scores (a threshold cannot split ties).
    """
    precision, recall, scores = pr_curve(predictions, ground_truth, k=k)
    if len(precision) == 0:
        return 0.0
    ends = np.r_[scores[1:] != scores[:-1], True]
    ok = (precision >= precision_target) & ends
    return float(recall[ok].max()) if ok.any() else 0.0


def best_per_query(predictions: Iterable[Prediction]) -> dict[str, Prediction]:
    """Each query's top prediction (ties: the smaller reference id, deterministic)."""
    best: dict[str, Prediction] = {}
    for p in predictions:
        current = best.get(p.query)
        if current is None or (p.score, current.ref) > (current.score, p.ref):
            best[p.query] = p
    return best


def recall_at_1(predictions: Iterable[Prediction], ground_truth: GroundTruth) -> float:
    """Share of positive queries whose best prediction is their reference."""
    positives = [q for q, ref in ground_truth.items() if ref is not None]
    if not positives:
        return float("nan")
    best = best_per_query(predictions)
    hits = sum(1 for q in positives if q in best and best[q].ref == ground_truth[q])
    return hits / len(positives)


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    precision: float
    recall: float
    f1: float
    false_duplicate_rate_negatives: float
    false_duplicate_rate_hard_negatives: float
    true_calls: int
    false_calls: int
    positives: int
    negatives: int
    hard_negatives: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def operating_point(
    predictions: Iterable[Prediction],
    ground_truth: GroundTruth,
    threshold: float,
    *,
    hard_negatives: Iterable[str] = (),
) -> OperatingPoint:
    """Precision, recall, F1 and false-duplicate rates when best scores >= ``threshold`` are called.

    ``ground_truth`` maps every query to its reference or ``None``; queries listed in
    ``hard_negatives`` (all with ``None``) are counted apart from the other negatives.
    """
    hard = set(hard_negatives)
    best = best_per_query(p for p in predictions if p.query in ground_truth)
    tp = fp = neg_calls = hard_calls = 0
    for query, ref in ground_truth.items():
        p = best.get(query)
        if p is None or p.score < threshold:
            continue
        if ref is not None and p.ref == ref:
            tp += 1
        else:
            fp += 1
            if ref is None:
                if query in hard:
                    hard_calls += 1
                else:
                    neg_calls += 1
    n_pos = _positives(ground_truth)
    n_hard = sum(1 for q in hard if q in ground_truth)
    n_neg = len(ground_truth) - n_pos - n_hard
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / n_pos if n_pos else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return OperatingPoint(
        threshold=float(threshold),
        precision=precision,
        recall=recall,
        f1=f1,
        false_duplicate_rate_negatives=neg_calls / n_neg if n_neg else float("nan"),
        false_duplicate_rate_hard_negatives=hard_calls / n_hard if n_hard else float("nan"),
        true_calls=tp,
        false_calls=fp,
        positives=n_pos,
        negatives=n_neg,
        hard_negatives=n_hard,
    )


def calibrate_threshold(
    predictions: Sequence[Prediction],
    ground_truth: GroundTruth,
    precision_target: float,
    *,
    balanced: bool = True,
) -> float:
    """Smallest threshold whose precision (over each query's best prediction) is >= the target.

    With ``balanced`` (the default) calls on query-less negatives are re-weighted so that
    negatives weigh as much as positives in total (DISC21's query set is half negatives): the
    threshold then does not depend on how many positives the calibration set happens to have,
    and precision 0.99 means a false-duplicate rate on negatives of about 1 % of the recall.
    Returns just above the best score when no threshold reaches the target.
    """
    best = best_per_query(p for p in predictions if p.query in ground_truth)
    n_pos = _positives(ground_truth)
    n_neg = len(ground_truth) - n_pos
    weight = (n_pos / n_neg) if (balanced and n_neg and n_pos) else 1.0
    rows = []
    for query, ref in ground_truth.items():
        p = best.get(query)
        if p is None:
            continue
        if ref is not None and p.ref == ref:
            rows.append((p.score, 1.0, 0.0))
        else:
            rows.append((p.score, 0.0, weight if ref is None else 1.0))
    if not rows:
        return 1.0
    rows.sort(key=lambda r: -r[0])
    scores = np.array([r[0] for r in rows])
    tp = np.cumsum([r[1] for r in rows])
    fp = np.cumsum([r[2] for r in rows])
    precision = tp / np.maximum(tp + fp, 1e-12)
    ends = np.r_[scores[1:] != scores[:-1], True]
    ok = (precision >= precision_target) & ends
    if not ok.any():
        return float(np.nextafter(scores[0], np.inf))
    return float(scores[np.flatnonzero(ok)[-1]])


def highest_threshold_for_recall(
    predictions: Iterable[Prediction], ground_truth: GroundTruth, recall_target: float
) -> float | None:
    """Highest threshold at which the operating point's recall is still >= ``recall_target``.

    Recall counts positive queries whose best prediction is right and scores >= the threshold;
    ``None`` when even threshold -inf does not reach the target.
    """
    positives = [q for q, ref in ground_truth.items() if ref is not None]
    if not positives:
        return None
    best = best_per_query(p for p in predictions if p.query in ground_truth)
    right = sorted(
        (best[q].score for q in positives if q in best and best[q].ref == ground_truth[q]), reverse=True
    )
    needed = math.ceil(recall_target * len(positives) - 1e-9)
    if needed == 0:
        return float("inf")
    if len(right) < needed:
        return None
    return float(right[needed - 1])

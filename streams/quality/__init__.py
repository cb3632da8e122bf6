"""Copy-detection quality benchmark: real photos, seeded edits, DISC21 metrics, calibration.

    >>> from streams.quality import build_benchmark, evaluate_encoder
    >>> bench = build_benchmark("smoke")
    >>> report = evaluate_encoder("sscd-mini", bench)
    >>> report.test.overall.micro_ap

Nothing here is imported by the worker; the CLI's ``dupstream eval`` and ``bench/quality.py``
use it. Photos are fetched at benchmark time (see :mod:`streams.quality.data`).
"""

from streams.quality.build import Benchmark, Query, Reference, build_benchmark
from streams.quality.data import Photo, QualityDataError, cache_dir
from streams.quality.evaluate import EvalReport, evaluate_encoder, evaluate_service
from streams.quality.metrics import Prediction, micro_average_precision, operating_point

__all__ = [
    "Benchmark",
    "EvalReport",
    "Photo",
    "Prediction",
    "QualityDataError",
    "Query",
    "Reference",
    "build_benchmark",
    "cache_dir",
    "evaluate_encoder",
    "evaluate_service",
    "micro_average_precision",
    "operating_point",
]

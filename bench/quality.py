"""Copy-detection quality, side by side: our encoders, imagededup's hashes, and the levers.

    python bench/quality.py                      # full benchmark, every model, markdown to stdout
    python bench/quality.py --size smoke         # seconds, sample photos only
    python bench/quality.py --models sscd-mini --no-levers --json out.json

Prints one markdown table per level (test split; thresholds calibrated on the calib split),
recall@1 per transform, the calibrated thresholds, and the levers tried on sscd / sscd-mini.
Embeddings are cached (``~/.cache/dupstream/quality/emb``), so a rerun only re-scores.
See docs/quality.md for the rules and the numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.quality import build_benchmark, evaluate_encoder
from streams.quality.evaluate import (
    EvalReport,
    Levers,
    format_markdown,
    format_transforms,
)

MODELS = ("sscd", "sscd-mini", "efficientnet-lite0", "phash")
PEERS = ("imagededup:phash", "imagededup:dhash", "imagededup:whash", "imagededup:ahash")
# Levers tried on the copy-detection models. Settings of normalisation and fusion are few on
# purpose: they are chosen on the calib split, and a wide grid would tune to this photo set.
LEVERS = {
    "sscd-mini": [
        Levers(input_size=224),
        Levers(input_size=256),
        Levers(input_size=384),
        Levers(flip=True),
        Levers(normalize=(1.0, 10)),
        Levers(normalize=(0.5, 10)),
        Levers(phash_weight=0.2),
        Levers(flip=True, normalize=(1.0, 10)),
    ],
    "sscd": [
        Levers(input_size=256),
        Levers(input_size=384),
        Levers(flip=True),
        Levers(normalize=(1.0, 10)),
        Levers(normalize=(0.5, 10)),
        Levers(phash_weight=0.2),
    ],
}


def imagededup_cnn_status() -> str:
    """Try imagededup's CNN method; say exactly what fails (it downloads torchvision weights)."""
    try:
        from imagededup.methods import CNN
    except ImportError as exc:
        return f"imagededup not installed: {exc}"
    try:
        CNN()
    except Exception as exc:
        return f"CNN() fails: {type(exc).__module__}.{type(exc).__name__}: {exc}"
    return "CNN() built (weights were already cached)"


def _thresholds_table(reports: list[EvalReport]) -> str:
    lines = [
        "| model | duplicate | similar | precision floor | recall ceiling | duplicate (strict) | "
        "service default |",
        "|---|---|---|---|---|---|---|",
    ]
    nan = float("nan")
    for r in reports:
        t, default = r.thresholds, r.default_thresholds or {}
        lines.append(
            f"| {r.model} | {t['duplicate']:.3f} | {t['similar']:.3f} | "
            f"{t.get('precision_floor', nan):.3f} | {t.get('recall_ceiling', nan):.3f} | "
            f"{t.get('duplicate_strict', nan):.3f} | "
            f"{default.get('duplicate', float('nan')):.3f} / {default.get('similar', float('nan')):.3f} |"
        )
    return "\n".join(lines) + "\n"


def _levers_table(reports: list[EvalReport]) -> str:
    lines = [
        "| model | levers | µAP | µAP L1 | µAP L2 | µAP L3 | R@P90 | dup thr | recall L1+L2 @thr | "
        "false-dup hard neg | embed s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        t = r.test
        lines.append(
            f"| {r.model} | {r.levers} | {t.overall['micro_ap']:.3f} | {t.levels['L1']['micro_ap']:.3f} | "
            f"{t.levels['L2']['micro_ap']:.3f} | {t.levels['L3']['micro_ap']:.3f} | "
            f"{t.overall['recall_at_p90']:.3f} | {r.thresholds['duplicate']:.3f} | "
            f"{t.levels['L1+L2']['recall_at_threshold']:.3f} | "
            f"{t.operating['false_duplicate_rate_hard_negatives']:.3f} | {r.seconds.get('embed', 0):.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="full", choices=("smoke", "full"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--no-peers", action="store_true", help="skip imagededup")
    parser.add_argument("--no-levers", action="store_true", help="skip the lever runs")
    parser.add_argument("--json", type=Path, help="write every report as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level="WARNING", stream=sys.stderr)

    start = time.perf_counter()
    bench = build_benchmark(args.size, seed=args.seed)
    print(f"# Quality benchmark `{bench.name}`\n")
    print("counts: " + ", ".join(f"{k} {v}" for k, v in bench.meta["counts"].items()) + "\n")
    models = list(args.models) + ([] if args.no_peers else list(PEERS))
    reports = []
    for model in models:
        t0 = time.perf_counter()
        reports.append(evaluate_encoder(model, bench))
        print(f"<!-- {model}: {time.perf_counter() - t0:.0f} s -->", file=sys.stderr, flush=True)
    print("## Models and peers\n")
    print(format_markdown(reports))
    print("## recall@1 per transform (test split)\n")
    print(format_transforms(reports))
    print(f"## Thresholds ({reports[0].calibrated_on}; rules in streams/quality/evaluate.py)\n")
    print(_thresholds_table(reports))
    lever_reports: list[EvalReport] = []
    if not args.no_levers:
        for model, options in LEVERS.items():
            if model not in args.models:
                continue
            base = next(r for r in reports if r.model == model)
            lever_reports.append(base)
            for levers in options:
                t0 = time.perf_counter()
                lever_reports.append(evaluate_encoder(model, bench, levers=levers))
                print(f"<!-- {model} {levers.label()}: {time.perf_counter() - t0:.0f} s -->", file=sys.stderr)
        where = "calibrated on calib for each setting" if bench.queries_of("calib") else "service defaults"
        print(f"## Levers (test split; thresholds {where})\n")
        print(_levers_table(lever_reports))
    if not args.no_peers:
        print("## imagededup CNN\n")
        print(imagededup_cnn_status() + "\n")
    print(f"<!-- total {time.perf_counter() - start:.0f} s -->")
    if args.json:
        args.json.write_text(
            json.dumps([r.to_dict() for r in reports + lever_reports], indent=1, default=float)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

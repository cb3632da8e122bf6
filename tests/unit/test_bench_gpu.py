"""bench/gpu.py on the CPU: the ``--quick`` code path, its skips and its one table (~15 s on 2 cores).

CPU figures mean nothing; these tests check that every section runs or says why it did not, that
the CUDA-only parts are skipped with a reason, and that the JSON matches the table.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bench import gpu


def rows(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text())["rows"])


def test_quick_cpu_run_prints_one_table_and_skips_cuda_parts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gpu.json"
    sizes = ["--batches", "2,4", "--path-batches", "4", "--images", "24", "--pipeline-events", "12"]
    argv = [
        "--device",
        "cpu",
        "--quick",
        *sizes,
        "--repeats",
        "1",
        "--target-s",
        "0.05",
        "--json-out",
        str(out),
    ]
    assert gpu.main(argv) == 0
    stdout = capsys.readouterr().out
    assert stdout.count("| section | encoder | case |") == 1
    assert all(line.startswith("|") for line in stdout.strip().splitlines())

    found = rows(out)
    by_section: dict[str, list[dict[str, Any]]] = {}
    for row in found:
        by_section.setdefault(row["section"], []).append(row)
    assert json.loads(out.read_text())["table"] in stdout

    ceiling = [r for r in by_section["ceiling"] if r["value"]]
    assert {r["batch"] for r in ceiling} == {2, 4} and all(r["unit"] == "img/s" for r in ceiling)
    skipped = " ".join(r["notes"] for r in by_section["ceiling"] if not r["value"])
    assert "fp16 needs CUDA" in skipped and "bf16 needs CUDA" in skipped

    path = {r["case"]: r for r in by_section["path"]}
    assert any(case.startswith("Pillow draft") and r["value"] for case, r in path.items())
    assert any(case.startswith("decode_jpeg + GPU resize + model") and r["value"] for case, r in path.items())
    assert "CPU stand-in for nvJPEG" in path["note"]["notes"]
    parity = re.search(r"min ([0-9.]+)", path["decode_jpeg path parity"]["notes"])
    assert parity and float(parity.group(1)) > 0.98  # the GPU resize is a faithful stand-in for Pillow's

    pipelines = {r["case"].split(" (")[0]: r for r in by_section["pipeline"]}
    pipeline = pipelines["DedupPipeline.process"]
    assert pipeline["unit"] == "events/s" and pipeline["value"] > 0
    assert "encode" in pipeline["notes"] and "search" in pipeline["notes"]
    assert pipelines["naive loop"]["value"] > 0

    assert "skipped" in by_section["service"][0]["notes"]
    ratios = {r["case"] for r in by_section["ratio"]}
    assert {"Pillow path / ceiling (fp32)", "pipeline / Pillow path", "pipeline / naive loop"} <= ratios
    env = {r["case"]: r for r in by_section["env"]}
    assert env["peak GPU memory"]["notes"].startswith("n/a")


def test_spent_budget_skips_sections_but_still_prints_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gpu.json"
    assert gpu.main(["--device", "cpu", "--quick", "--budget-s", "0", "--json-out", str(out)]) == 0
    assert capsys.readouterr().out.count("| section |") == 1
    notes = {r["section"]: r["notes"] for r in rows(out) if r["section"] in gpu.SECTIONS}
    assert notes["ceiling"] == notes["path"] == notes["pipeline"] == "skipped: global budget spent"


def test_service_is_skipped_with_a_reason_without_java_or_jars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gpu.shutil, "which", lambda name: None)
    assert "java" in (gpu.service_unavailable() or "")
    monkeypatch.setattr(gpu.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setenv("DUPSTREAM_KAFKA_LIB", str(tmp_path / "empty"))
    assert "no Kafka jar cache" in (gpu.service_unavailable() or "")

"""The faust app's configuration, without a broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.app import build_app
from streams.metrics import WorkerMetrics
from streams.settings import WorkerSettings


def test_faust_state_stays_in_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # faust's default, "<app id>-data", is relative to the cwd
    data_dir = tmp_path / "state" / "nested"
    settings = WorkerSettings(group="g1", data_dir=data_dir)
    app = build_app(settings, pipeline=None, metrics=WorkerMetrics())  # type: ignore[arg-type]
    assert app.conf.datadir == data_dir / "g1-data"
    app._create_directories()  # what faust does on its first start
    assert (data_dir / "g1-data").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]

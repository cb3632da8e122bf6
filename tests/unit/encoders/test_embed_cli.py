"""``dupstream embed``: real photos to an .npz of ids (paths as given) and L2-normalised vectors.

Runs the real command (``streams.cli.app`` through typer's CliRunner) with fast encoders
(``phash``, ``test-tiny``), on scikit-image / scikit-learn sample photos written to ``tmp_path``.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import encoders
from encoders.decode import decode_image

skimage_data = pytest.importorskip("skimage.data")
sklearn_datasets = pytest.importorskip("sklearn.datasets")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The command points the root logger at the runner's stderr; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    """Four distinct photos as files: two JPEGs (one shipped by scikit-learn as is), two PNGs."""
    china = Path(sklearn_datasets.load_sample_images().filenames[0]).read_bytes()
    files = {"china.jpg": china}
    for name, fmt in (("chelsea", "JPEG"), ("coffee", "PNG"), ("rocket", "PNG")):
        buffer = io.BytesIO()
        Image.fromarray(getattr(skimage_data, name)()).save(buffer, fmt)
        files[f"{name}.{'jpg' if fmt == 'JPEG' else 'png'}"] = buffer.getvalue()
    return files


def write(folder: Path, files: dict[str, bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths


def embed(*args: str) -> tuple[dict[str, object], str]:
    """Run ``dupstream embed ARGS``; returns its JSON summary (stdout) and stderr."""
    from streams.cli import app

    result = CliRunner().invoke(app, ["embed", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout), result.stderr


def expected_vector(encoder: encoders.Encoder, data: bytes) -> np.ndarray:
    image = decode_image(data, draft_size=encoder.draft_size)
    return encoder.embed_prepared(encoder.prepare(image)[None])[0]


def test_writes_ids_as_given_and_unit_vectors_in_input_order(
    tmp_path: Path, photos: dict[str, bytes]
) -> None:
    paths = write(tmp_path / "in", photos)
    order = [paths[2], paths[0], paths[3], paths[1]]  # not sorted: the output keeps the given order
    out = tmp_path / "vectors.npz"

    summary, _ = embed("--model", "phash", "--out", str(out), *map(str, order))

    assert summary == {"written": 4, "skipped": 0, "out": str(out)}
    with np.load(out) as saved:
        ids, vectors, model = saved["ids"], saved["vectors"], saved["model"]
    assert ids.tolist() == [str(p) for p in order]
    assert vectors.dtype == np.float32 and vectors.shape == (4, 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    phash = encoders.create("phash")
    assert str(model) == phash.info.model_id
    for path, vector in zip(order, vectors, strict=True):  # each row is its own file's hash
        np.testing.assert_array_equal(vector, expected_vector(phash, path.read_bytes()))
    assert len({row.tobytes() for row in vectors}) == 4


def test_relative_paths_stay_relative(
    tmp_path: Path, photos: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "photos", photos)
    monkeypatch.chdir(tmp_path)

    summary, _ = embed("--model", "phash", "--out", "v.npz", "photos/coffee.png", "./photos/china.jpg")

    assert summary["written"] == 2
    with np.load(tmp_path / "v.npz") as saved:  # ids are str(Path(arg)): pathlib drops the "./"
        assert saved["ids"].tolist() == ["photos/coffee.png", "photos/china.jpg"]


def test_unreadable_files_are_skipped_and_counted(tmp_path: Path, photos: dict[str, bytes]) -> None:
    good = write(tmp_path / "in", {k: photos[k] for k in ("chelsea.jpg", "coffee.png")})
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "page.jpg").write_text("<html><body>404 not found</body></html>")
    (bad / "cut.jpg").write_bytes(photos["china.jpg"][: len(photos["china.jpg"]) // 3])
    (bad / "empty.png").write_bytes(b"")
    missing = bad / "missing.jpg"
    args = [str(good[0]), str(bad / "page.jpg"), str(bad / "cut.jpg"), str(good[1])]
    args += [str(bad / "empty.png"), str(missing)]
    out = tmp_path / "v.npz"

    summary, stderr = embed("--model", "phash", "--out", str(out), *args)

    assert summary == {"written": 2, "skipped": 4, "out": str(out)}
    with np.load(out) as saved:
        assert saved["ids"].tolist() == [str(good[0]), str(good[1])]
        assert saved["vectors"].shape == (2, 64)
    for name in ("page.jpg", "cut.jpg", "empty.png", "missing.jpg"):
        assert f"skipping {bad / name}" in stderr


def test_directories_give_their_image_files_sorted(tmp_path: Path, photos: dict[str, bytes]) -> None:
    folder = tmp_path / "album"
    write(folder / "sub", {"rocket.png": photos["rocket.png"]})
    write(folder, {"coffee.png": photos["coffee.png"], "china.jpg": photos["china.jpg"]})
    (folder / "notes.txt").write_text("not an image, and not counted")
    out = tmp_path / "v.npz"

    summary, _ = embed("--model", "phash", "--out", str(out), str(folder))

    assert summary["written"] == 3 and summary["skipped"] == 0
    with np.load(out) as saved:
        expected = [folder / "china.jpg", folder / "coffee.png", folder / "sub" / "rocket.png"]
        assert saved["ids"].tolist() == [str(p) for p in expected]


def test_batches_smaller_than_input_give_the_same_vectors(tmp_path: Path, photos: dict[str, bytes]) -> None:
    paths = [str(p) for p in write(tmp_path / "in", photos)]
    embed("--model", "test-tiny", "--device", "cpu", "--out", str(tmp_path / "one.npz"), *paths)
    embed(
        "--model",
        "test-tiny",
        "--device",
        "cpu",
        "--batch-size",
        "3",
        "--out",
        str(tmp_path / "b3.npz"),
        *paths,
    )

    with np.load(tmp_path / "one.npz") as one, np.load(tmp_path / "b3.npz") as three:
        assert one["vectors"].shape == (4, 32) and one["vectors"].dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(one["vectors"], axis=1), 1.0, atol=1e-5)
        assert three["ids"].tolist() == one["ids"].tolist() == paths
        np.testing.assert_allclose(three["vectors"], one["vectors"], atol=1e-5)


def test_no_readable_image_writes_an_empty_file_and_fails(tmp_path: Path) -> None:
    from streams.cli import app

    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    out = tmp_path / "v.npz"

    result = CliRunner().invoke(
        app, ["embed", "--model", "phash", "--out", str(out), str(tmp_path / "junk.jpg")]
    )

    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"written": 0, "skipped": 1, "out": str(out)}
    with np.load(out) as saved:
        assert saved["ids"].shape == (0,)
        assert saved["vectors"].shape == (0, 64) and saved["vectors"].dtype == np.float32


def test_missing_out_folder_and_zero_batch_are_refused_up_front(tmp_path: Path) -> None:
    from streams.cli import app

    missing = CliRunner().invoke(
        app, ["embed", "--model", "phash", "--out", str(tmp_path / "no" / "v.npz"), "x"]
    )
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    zero = CliRunner().invoke(app, ["embed", "--model", "phash", "--batch-size", "0", "--out", "v.npz", "x"])
    assert zero.exit_code == 2


def test_out_without_npz_suffix_is_written_exactly_there(tmp_path: Path, photos: dict[str, bytes]) -> None:
    (path,) = write(tmp_path / "in", {"coffee.png": photos["coffee.png"]})
    out = tmp_path / "vectors"  # np.savez(path) alone would write vectors.npz instead

    summary, _ = embed("--model", "phash", "--out", str(out), str(path))

    assert summary["out"] == str(out)
    assert not out.with_suffix(".npz").exists()
    with np.load(out) as saved:
        assert saved["ids"].tolist() == [str(path)]

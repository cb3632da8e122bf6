"""file:// roots, traversal, symlinks, and http(s) off by default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streams.errors import FetchError
from streams.fetch import Fetcher, FetchPolicy


@pytest.fixture
def root(tmp_path: Path) -> Path:
    inside = tmp_path / "root"
    inside.mkdir()
    (inside / "ok.bin").write_bytes(b"hello")
    (tmp_path / "secret.bin").write_bytes(b"secret")
    os.symlink(tmp_path / "secret.bin", inside / "escape.bin")
    return inside


def reason(fetcher: Fetcher, uri: str) -> str:
    with pytest.raises(FetchError) as info:
        fetcher.fetch(uri)
    return info.value.reason


def test_reads_files_under_allowed_root(root: Path) -> None:
    assert Fetcher(FetchPolicy(allow_roots=[root])).fetch((root / "ok.bin").as_uri()) == b"hello"


def test_refuses_paths_outside_root(root: Path) -> None:
    fetcher = Fetcher(FetchPolicy(allow_roots=[root]))
    assert reason(fetcher, f"file://{root}/../secret.bin") == "path_not_allowed"
    assert reason(fetcher, (root / "escape.bin").as_uri()) == "path_not_allowed"
    assert reason(fetcher, "file:///etc/passwd") == "path_not_allowed"
    assert reason(fetcher, f"file://{root}/missing.bin") == "not_found"
    assert reason(fetcher, root.as_uri()) == "not_a_file"


def test_no_roots_means_no_files(root: Path) -> None:
    assert reason(Fetcher(FetchPolicy()), (root / "ok.bin").as_uri()) == "path_not_allowed"


def test_size_cap(root: Path) -> None:
    assert (
        reason(Fetcher(FetchPolicy(allow_roots=[root], max_bytes=3)), (root / "ok.bin").as_uri())
        == "too_large"
    )


def test_http_is_off_unless_enabled_and_private_addresses_are_refused() -> None:
    assert reason(Fetcher(FetchPolicy()), "http://example.com/a.jpg") == "http_disabled"
    on = Fetcher(FetchPolicy(allow_http=True))
    assert reason(on, "http://127.0.0.1:9/a.jpg") == "address_not_allowed"
    assert reason(on, "http://169.254.169.254/latest/meta-data") == "address_not_allowed"
    assert reason(on, "http://10.0.0.1/a.jpg") == "address_not_allowed"
    listed = Fetcher(FetchPolicy(allow_http=True, allow_hosts=["images.example.org"]))
    assert reason(listed, "https://other.example.org/a.jpg") == "host_not_allowed"


@pytest.mark.parametrize("uri", ["ftp://x/a.jpg", "gopher://x", "data:image/png;base64,AAAA", "/etc/passwd"])
def test_unknown_schemes(uri: str) -> None:
    assert reason(Fetcher(FetchPolicy()), uri) == "unsupported_scheme"

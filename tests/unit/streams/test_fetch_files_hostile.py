"""file:// reads of things that are not regular files must fail fast, never block."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streams.errors import FetchError
from streams.fetch import Fetcher, FetchPolicy

pytestmark = pytest.mark.timeout(20)


def reason(fetcher: Fetcher, uri: str) -> str:
    with pytest.raises(FetchError) as info:
        fetcher.fetch(uri)
    return info.value.reason


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_under_the_root_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    assert (
        reason(Fetcher(FetchPolicy(allow_roots=[tmp_path])), (tmp_path / "pipe.jpg").as_uri()) == "not_a_file"
    )


def test_a_directory_and_an_encoded_traversal_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "secret.jpg").write_bytes(b"secret")
    fetcher = Fetcher(FetchPolicy(allow_roots=[root]))
    assert reason(fetcher, (root / "sub").as_uri()) == "not_a_file"
    assert reason(fetcher, f"file://{root}/sub/%2e%2e/%2e%2e/secret.jpg") == "path_not_allowed"
    assert reason(fetcher, f"file://{root}/ok.jpg%00.png") == "path_not_allowed"
    assert reason(fetcher, f"file://evil.example.org{root}/ok.jpg") == "path_not_allowed"


@pytest.mark.parametrize(
    "uri", ["file://[::1/x", "http://[::1/x", "https://host:99999/x", "http://host:port/x"]
)
def test_malformed_uris_are_bad_uri(uri: str) -> None:
    assert reason(Fetcher(FetchPolicy(allow_http=True)), uri) == "bad_uri"

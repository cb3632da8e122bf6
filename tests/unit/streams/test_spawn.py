"""The worker-process helpers: readiness against a real HTTP endpoint and a real child process."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from streams.spawn import WorkerNotReady, is_ready, wait_ready, worker_command


def _server(status: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/readyz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_ready_only_on_200(sleeper: subprocess.Popen[bytes]) -> None:
    ok, starting = _server(200), _server(503)
    try:
        assert is_ready(ok.server_address[1])
        assert not is_ready(starting.server_address[1])
        wait_ready(sleeper, ok.server_address[1], timeout_s=5)
        with pytest.raises(WorkerNotReady, match="not ready after"):
            wait_ready(sleeper, starting.server_address[1], timeout_s=1)
    finally:
        ok.shutdown()
        starting.shutdown()


def test_a_worker_that_exits_is_reported_at_once() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(WorkerNotReady, match="exited with code 3"):
        wait_ready(proc, 1, timeout_s=60)


def test_worker_command_runs_the_cli_with_the_topics_and_extras() -> None:
    argv = worker_command(
        broker="127.0.0.1:1",
        index="x.db",
        model="phash",
        input_topic="in",
        decisions_topic="out",
        dead_letter_topic="dead",
        group="g",
        web_port=7,
        extra=["--batch-size", "8"],
    )
    assert argv[:4] == [sys.executable, "-m", "streams.cli", "worker"]
    pairs = dict(zip(argv[4::2], argv[5::2], strict=True))
    assert pairs["--input-topic"] == "in" and pairs["--web-port"] == "7" and pairs["--batch-size"] == "8"

"""Run ``dupstream worker`` as a child process: a free port, its command line, its readiness.

Shared by ``dupstream demo``, the benchmarks and the integration tests, which all start real
workers beside a broker.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence

__all__ = ["WorkerNotReady", "free_port", "is_ready", "wait_ready", "worker_command"]


class WorkerNotReady(RuntimeError):
    """The worker exited, or did not answer ``/readyz`` in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_command(
    *,
    broker: str,
    index: str,
    model: str,
    input_topic: str,
    decisions_topic: str,
    dead_letter_topic: str,
    group: str,
    web_port: int,
    partitions: int = 1,
    extra: Sequence[str] = (),
) -> list[str]:
    """The argv of a worker run with this interpreter (``python -m streams.cli worker ...``)."""
    return [
        sys.executable,
        "-m",
        "streams.cli",
        "worker",
        "--broker",
        broker,
        "--index",
        index,
        "--model",
        model,
        "--input-topic",
        input_topic,
        "--decisions-topic",
        decisions_topic,
        "--dead-letter-topic",
        dead_letter_topic,
        "--group",
        group,
        "--partitions",
        str(partitions),
        "--web-port",
        str(web_port),
        *extra,
    ]


def is_ready(web_port: int) -> bool:
    """Whether the worker on ``web_port`` answers ``/readyz`` with 200 (model loaded, partitions assigned)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:  # refused, reset, timed out, or an HTTP error status (503 while starting)
        return False


def wait_ready(proc: subprocess.Popen[bytes], web_port: int, *, timeout_s: float = 180) -> None:
    """Block until the worker answers ``/readyz``; raises :class:`WorkerNotReady` if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise WorkerNotReady(f"worker exited with code {proc.returncode}")
        if is_ready(web_port):
            return
        time.sleep(0.5)
    raise WorkerNotReady(f"worker not ready after {timeout_s:.0f}s")

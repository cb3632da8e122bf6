"""Read image bytes behind a URI, safely.

* ``file://`` paths are read only under the configured roots, after resolving symlinks and
  ``..``: a path that ends outside every root is refused (``path_not_allowed``).
* ``http(s)://`` is off unless enabled. When on, the host must be allow-listed (or the list
  empty), every resolved address must be public (no loopback, private, link-local, multicast or
  reserved ranges unless ``allow_private_networks``), redirects are followed by hand with the
  same checks, and the body is streamed with a byte cap and a total deadline.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from streams.errors import FetchError

__all__ = ["FetchPolicy", "Fetcher"]


@dataclass(frozen=True)
class FetchPolicy:
    """What the fetcher may read. Defaults are closed: no roots, no http."""

    allow_roots: Sequence[Path] = ()
    allow_http: bool = False
    allow_hosts: Sequence[str] = ()
    allow_private_networks: bool = False
    max_bytes: int = 32 * 1024 * 1024
    timeout_s: float = 10.0
    max_redirects: int = 3
    extra_headers: dict[str, str] = field(default_factory=dict)


class Fetcher:
    """Thread-safe reader of ``file://`` and (optionally) ``http(s)://`` URIs."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy
        self._roots = [Path(os.path.realpath(root)) for root in policy.allow_roots]
        self._client: httpx.Client | None = None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def fetch(self, uri: str) -> bytes:
        scheme = urlsplit(uri).scheme.lower()
        if scheme == "file":
            return self._read_file(uri)
        if scheme in ("http", "https"):
            return self._read_http(uri)
        raise FetchError(
            f"URI scheme {scheme or '(none)'!r} is not supported; use file:// or http(s)://",
            reason="unsupported_scheme",
        )

    # --- file:// ------------------------------------------------------------

    def _read_file(self, uri: str) -> bytes:
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise FetchError(
                f"file URI host {parts.netloc!r} is not allowed; use file:///absolute/path",
                reason="path_not_allowed",
            )
        raw_path = unquote(parts.path)
        if "\x00" in raw_path:
            raise FetchError("file path contains a NUL byte", reason="path_not_allowed")
        if not self._roots:
            raise FetchError(
                "file:// URIs are disabled: no --allow-root is configured", reason="path_not_allowed"
            )
        resolved = Path(os.path.realpath(raw_path))
        if not any(resolved.is_relative_to(root) for root in self._roots):
            raise FetchError(
                f"{raw_path[:200]!r} resolves outside the allowed roots", reason="path_not_allowed"
            )
        try:
            with open(resolved, "rb") as handle:
                if not os.path.isfile(resolved):
                    raise FetchError(f"{raw_path[:200]!r} is not a regular file", reason="not_a_file")
                data = handle.read(self.policy.max_bytes + 1)
        except FileNotFoundError as exc:
            raise FetchError(f"{raw_path[:200]!r} does not exist", reason="not_found") from exc
        except IsADirectoryError as exc:
            raise FetchError(f"{raw_path[:200]!r} is a directory", reason="not_a_file") from exc
        except OSError as exc:
            raise FetchError(f"cannot read {raw_path[:200]!r}: {exc.strerror}", reason="unreadable") from exc
        if len(data) > self.policy.max_bytes:
            raise FetchError(
                f"file is larger than the {self.policy.max_bytes}-byte limit", reason="too_large"
            )
        return data

    # --- http(s):// -----------------------------------------------------------

    def _check_host(self, url: str) -> None:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if not host:
            raise FetchError("URL has no host", reason="bad_uri")
        if self.policy.allow_hosts and host not in {h.lower() for h in self.policy.allow_hosts}:
            raise FetchError(f"host {host!r} is not in the allowed hosts", reason="host_not_allowed")
        if self.policy.allow_private_networks:
            return
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise FetchError(
                f"cannot resolve host {host!r}", reason="unresolvable_host", retriable=False
            ) from exc
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if not address.is_global or address.is_multicast:
                raise FetchError(
                    f"host {host!r} resolves to non-public address {address}", reason="address_not_allowed"
                )

    def _read_http(self, uri: str) -> bytes:
        if not self.policy.allow_http:
            raise FetchError(
                "http(s) fetching is disabled; enable it with --allow-http and --allow-host",
                reason="http_disabled",
            )
        if self._client is None:
            self._client = httpx.Client(
                follow_redirects=False, trust_env=False, headers=self.policy.extra_headers
            )
        deadline = time.monotonic() + self.policy.timeout_s
        url = uri
        for _ in range(self.policy.max_redirects + 1):
            self._check_host(url)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchError(f"fetching took longer than {self.policy.timeout_s}s", reason="timeout")
            try:
                with self._client.stream("GET", url, timeout=remaining) as response:
                    if response.is_redirect:
                        location = response.headers.get("location")
                        if not location:
                            raise FetchError("redirect without a Location header", reason="http_error")
                        url = urljoin(url, location)
                        if urlsplit(url).scheme not in ("http", "https"):
                            raise FetchError("redirect to a non-http URL", reason="unsupported_scheme")
                        continue
                    if response.status_code >= 400:
                        raise FetchError(
                            f"HTTP {response.status_code} from {urlsplit(url).hostname}",
                            reason="http_error",
                            retriable=response.status_code >= 500,
                        )
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > self.policy.max_bytes:
                        raise FetchError(
                            f"Content-Length {declared} exceeds {self.policy.max_bytes} bytes",
                            reason="too_large",
                        )
                    chunks: list[bytes] = []
                    size = 0
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > self.policy.max_bytes:
                            raise FetchError(
                                f"body exceeds {self.policy.max_bytes} bytes", reason="too_large"
                            )
                        if time.monotonic() > deadline:
                            raise FetchError(
                                f"fetching took longer than {self.policy.timeout_s}s", reason="timeout"
                            )
                        chunks.append(chunk)
                    return b"".join(chunks)
            except httpx.TimeoutException as exc:
                raise FetchError(f"no answer within {self.policy.timeout_s}s", reason="timeout") from exc
            except httpx.HTTPError as exc:
                raise FetchError(f"HTTP request failed: {type(exc).__name__}", reason="http_error") from exc
        raise FetchError(f"more than {self.policy.max_redirects} redirects", reason="too_many_redirects")

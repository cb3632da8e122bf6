"""Read image bytes behind a URI, safely.

* ``file://`` paths are read only under the configured roots, after resolving symlinks and
  ``..``: a path that ends outside every root is refused (``path_not_allowed``). Only regular
  files are read; a FIFO or device inside a root is refused without blocking (``not_a_file``).
* ``http(s)://`` is off unless enabled. When on, the host must be allow-listed (or the list
  empty; an entry ``host:port`` also pins the port), every resolved address must be public (no
  loopback, private, link-local, multicast or reserved ranges, also when embedded in an IPv6
  address, unless ``allow_private_networks``), redirects are followed by hand with the same
  checks, and the body is streamed with a byte cap and a total deadline.

The address check and the connection are one step: the fetcher resolves the host once, checks
every address and connects to a checked address itself (the URL's host name still goes into the
``Host`` header and TLS SNI/certificate check), so a DNS answer that changes between the check and
the connection (DNS rebinding) cannot reach a refused address. The deadline bounds every connect,
TLS handshake and socket read of a fetch, not only the gaps between chunks. Bodies are requested
and read without content encoding: a compressed response could expand ~1000x past the byte cap.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

import httpcore
import httpx

from streams.errors import FetchError

__all__ = ["FetchPolicy", "Fetcher"]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class FetchPolicy:
    """What the fetcher may read. Defaults are closed: no roots, no http.

    ``allow_hosts`` entries are host names or IP literals (any port) or ``host:port`` (that port
    only; ``[v6]:port`` for IPv6). ``timeout_s`` is the total deadline of one fetch, redirects
    included.
    """

    allow_roots: Sequence[Path] = ()
    allow_http: bool = False
    allow_hosts: Sequence[str] = ()
    allow_private_networks: bool = False
    max_bytes: int = 32 * 1024 * 1024
    timeout_s: float = 10.0
    max_redirects: int = 3
    extra_headers: dict[str, str] = field(default_factory=dict)


def _split(url: str) -> SplitResult:
    """``urlsplit`` with its port validated; a malformed URI is ``bad_uri``, never a ValueError."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises for a non-numeric or out-of-range port
    except ValueError as exc:
        raise FetchError(f"URI {url[:200]!r} is malformed: {exc}", reason="bad_uri") from exc
    return parts


def _parse_allowed_host(entry: str) -> tuple[str, int | None]:
    text = entry.strip().lower()
    try:
        return str(ipaddress.ip_address(text.strip("[]"))), None  # a bare IP literal, v6 included
    except ValueError:
        pass
    try:
        parts = urlsplit("//" + text)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ValueError(f"allowed host {entry!r} is not 'host' or 'host:port': {exc}") from exc
    if not host or parts.path or parts.query or parts.username:
        raise ValueError(f"allowed host {entry!r} is not 'host' or 'host:port'")
    return host, port


def _non_public(address: _IPAddress) -> bool:
    """True for loopback, private, link-local, multicast, reserved... also inside IPv6 wrappers."""
    if not address.is_global or address.is_multicast:
        return True
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return _non_public(embedded)
    return False


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every operation ends by the fetch's deadline."""

    def __init__(self, stream: httpcore.NetworkStream, clamp: Callable[[float | None], float | None]) -> None:
        self._stream = stream
        self._clamp = clamp

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._clamp(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._clamp(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname, self._clamp(timeout))
        return _DeadlineStream(tls, self._clamp)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _GuardedBackend(httpcore.NetworkBackend):
    """Resolve once, check every address, connect to a checked address (no second lookup)."""

    def __init__(self, fetcher: Fetcher) -> None:
        self._fetcher = fetcher
        self._plain = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self._fetcher._resolve(host, port)
        last: Exception | None = None
        for address in addresses:  # like socket.create_connection: first that answers wins
            try:
                stream = self._plain.connect_tcp(
                    str(address),
                    port,
                    timeout=self._fetcher._clamp(timeout, httpcore.ConnectTimeout),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            return _DeadlineStream(stream, lambda t: self._fetcher._clamp(t, httpcore.ReadTimeout))
        raise last or httpcore.ConnectError(f"no address to connect to for {host!r}")

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are never used by the fetcher")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Fetcher:
    """Thread-safe reader of ``file://`` and (optionally) ``http(s)://`` URIs."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy
        self._roots = [Path(os.path.realpath(root)) for root in policy.allow_roots]
        self._allowed_hosts = [_parse_allowed_host(entry) for entry in policy.allow_hosts]
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        self._local = threading.local()  # the deadline of the fetch running on this thread

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def fetch(self, uri: str) -> bytes:
        scheme = _split(uri).scheme.lower()
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
        parts = _split(uri)
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
        # O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: a symlink swapped in
        # after realpath() is refused. Regular files are then read as usual.
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(resolved, flags | getattr(os, "O_CLOEXEC", 0))
            with os.fdopen(fd, "rb") as handle:
                mode = os.fstat(handle.fileno()).st_mode
                if stat.S_ISDIR(mode):
                    raise FetchError(f"{raw_path[:200]!r} is a directory", reason="not_a_file")
                if not stat.S_ISREG(mode):
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
        """The allow-list, by name and port; addresses are checked when connecting (:meth:`_resolve`)."""
        parts = _split(url)
        host = (parts.hostname or "").lower()
        if not host:
            raise FetchError(f"URL {url[:200]!r} has no host", reason="bad_uri")
        if not self._allowed_hosts:
            return
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        with contextlib.suppress(ValueError):
            host = str(ipaddress.ip_address(host))  # one spelling for IPv6 literals
        if not any(host == name and allowed in (None, port) for name, allowed in self._allowed_hosts):
            raise FetchError(
                f"host {host!r} port {port} is not in the allowed hosts", reason="host_not_allowed"
            )

    def _resolve(self, host: str, port: int) -> list[_IPAddress]:
        """Every address of ``host``; all must be public unless private networks are allowed."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:  # gaierror, or an IDNA label that cannot be encoded
            raise FetchError(
                f"cannot resolve host {host[:200]!r}: {exc}", reason="unresolvable_host", retriable=False
            ) from exc
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        if not self.policy.allow_private_networks:
            for address in addresses:
                if _non_public(address):
                    raise FetchError(
                        f"host {host[:200]!r} resolves to non-public address {address}; only public "
                        "addresses are fetched",
                        reason="address_not_allowed",
                    )
        return addresses

    def _clamp(self, timeout: float | None, error: type[Exception]) -> float | None:
        """``timeout`` cut to what is left of this thread's fetch deadline; past it, ``error``."""
        deadline = getattr(self._local, "deadline", None)
        if deadline is None:
            return timeout
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise error(f"fetch deadline of {self.policy.timeout_s}s passed")
        return remaining if timeout is None else min(timeout, remaining)

    def _http_client(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                transport = httpx.HTTPTransport(trust_env=False)
                # httpx has no public hook for the network backend: swap the pool for one that
                # connects through _GuardedBackend (same settings as HTTPTransport's own pool).
                transport._pool = httpcore.ConnectionPool(
                    ssl_context=httpx.create_ssl_context(trust_env=False),
                    max_connections=100,
                    max_keepalive_connections=20,
                    keepalive_expiry=5.0,
                    network_backend=_GuardedBackend(self),
                )
                headers = {**self.policy.extra_headers, "Accept-Encoding": "identity"}
                self._client = httpx.Client(
                    transport=transport, follow_redirects=False, trust_env=False, headers=headers
                )
            return self._client

    def _read_http(self, uri: str) -> bytes:
        if not self.policy.allow_http:
            raise FetchError(
                "http(s) fetching is disabled; enable it with --allow-http and --allow-host",
                reason="http_disabled",
            )
        client = self._http_client()
        deadline = time.monotonic() + self.policy.timeout_s
        self._local.deadline = deadline
        try:
            url = uri
            for _ in range(self.policy.max_redirects + 1):
                self._check_host(url)
                location = self._get(client, url, deadline)
                if isinstance(location, bytes):
                    return location
                url = location
            raise FetchError(f"more than {self.policy.max_redirects} redirects", reason="too_many_redirects")
        finally:
            self._local.deadline = None

    def _get(self, client: httpx.Client, url: str, deadline: float) -> bytes | str:
        """The body of ``url``, or the next URL when it redirects."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(f"fetching took longer than {self.policy.timeout_s}s", reason="timeout")
        host = _split(url).hostname
        try:
            with client.stream("GET", url, timeout=remaining) as response:
                if response.is_redirect:
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError("redirect without a Location header", reason="http_error")
                    try:
                        target = urljoin(url, location)
                    except ValueError as exc:
                        raise FetchError(
                            f"redirect to a malformed URL {location[:200]!r}", reason="bad_uri"
                        ) from exc
                    if _split(target).scheme.lower() not in ("http", "https"):
                        raise FetchError(
                            f"redirect to a non-http URL {target[:200]!r}", reason="unsupported_scheme"
                        )
                    return target
                if response.status_code >= 400:
                    raise FetchError(
                        f"HTTP {response.status_code} from {host}",
                        reason="http_error",
                        retriable=response.status_code >= 500,
                    )
                encoding = response.headers.get("content-encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    raise FetchError(
                        f"{host} sent Content-Encoding {encoding[:40]!r} although identity was asked "
                        "for; compressed bodies are refused (they can expand past the byte cap)",
                        reason="http_error",
                    )
                declared = response.headers.get("content-length", "").strip()
                if declared.isdigit() and int(declared) > self.policy.max_bytes:
                    raise FetchError(
                        f"Content-Length {declared[:40]} exceeds {self.policy.max_bytes} bytes",
                        reason="too_large",
                    )
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_raw():
                    size += len(chunk)
                    if size > self.policy.max_bytes:
                        raise FetchError(f"body exceeds {self.policy.max_bytes} bytes", reason="too_large")
                    if time.monotonic() > deadline:
                        raise FetchError(
                            f"fetching took longer than {self.policy.timeout_s}s", reason="timeout"
                        )
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.TimeoutException as exc:
            raise FetchError(
                f"no complete answer from {host} within {self.policy.timeout_s}s", reason="timeout"
            ) from exc
        except httpx.InvalidURL as exc:
            raise FetchError(f"URL {url[:200]!r} is malformed: {exc}", reason="bad_uri") from exc
        except httpx.HTTPError as exc:
            raise FetchError(
                f"HTTP request to {host} failed: {type(exc).__name__}: {exc}"[:500], reason="http_error"
            ) from exc

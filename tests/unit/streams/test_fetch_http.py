"""http(s) fetching against a real hostile server on 127.0.0.1: refusals, redirects, stalls, caps.

Two policies: the default one (private networks refused, so the loopback server is refused before
any request) and one that reaches the server (``allow_private_networks`` with the server's host
and port as the only allowed host). Timeouts are 1 s so each stalled route costs about a second.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from streams.errors import FetchError
from streams.fetch import Fetcher, FetchPolicy
from tests.fixtures.http_server import HostileServer, hostile_server, small_jpeg

pytestmark = pytest.mark.timeout(60)

TIMEOUT_S = 1.0
SLACK_S = TIMEOUT_S + 0.6  # scheduling slack on a loaded 2-core machine


@pytest.fixture(scope="module")
def image() -> bytes:
    return small_jpeg()


@pytest.fixture
def server(image: bytes) -> Iterator[HostileServer]:
    yield from hostile_server(image)


@pytest.fixture
def other_server(image: bytes) -> Iterator[HostileServer]:
    """A second server: the target of a redirect to another port."""
    yield from hostile_server(image)


def open_policy(server: HostileServer, **overrides: Any) -> FetchPolicy:
    """Reaches the test server and nothing else: its host:port is the only allowed host."""
    settings: dict[str, Any] = {
        "allow_http": True,
        "allow_private_networks": True,
        "allow_hosts": [f"127.0.0.1:{server.port}"],
        "timeout_s": TIMEOUT_S,
        "max_bytes": 1024 * 1024,
        **overrides,
    }
    return FetchPolicy(**settings)


@pytest.fixture
def fetcher(server: HostileServer) -> Iterator[Fetcher]:
    reader = Fetcher(open_policy(server))
    yield reader
    reader.close()


def failure(fetcher: Fetcher, uri: str) -> FetchError:
    with pytest.raises(FetchError) as info:
        fetcher.fetch(uri)
    return info.value


def paths(server: HostileServer) -> list[str]:
    return [path for path, _ in server.requests]


# --- the default policy: private networks refused up front ------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6
        "0x7f000001",  # the resolver reads hex, and so do some browsers
        "2130706433",  # 127.0.0.1 as one decimal number
    ],
)
def test_loopback_is_refused_before_any_request(server: HostileServer, host: str) -> None:
    fetcher = Fetcher(FetchPolicy(allow_http=True, timeout_s=TIMEOUT_S))
    assert failure(fetcher, server.url("/image.jpg", host=host)).reason == "address_not_allowed"
    assert server.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
        "http://10.0.0.1/a.jpg",
        "http://192.168.1.1/a.jpg",
        "http://[fe80::1]/a.jpg",
        "http://[64:ff9b::a9fe:a9fe]/a.jpg",  # NAT64 wrapping of 169.254.169.254
        "http://[2002:a00:1::1]/a.jpg",  # 6to4 wrapping of 10.0.0.1
        "http://0.0.0.0/a.jpg",
    ],
)
def test_private_and_link_local_addresses_are_refused(url: str) -> None:
    fetcher = Fetcher(FetchPolicy(allow_http=True, timeout_s=TIMEOUT_S))
    assert failure(fetcher, url).reason == "address_not_allowed"


def test_an_allowed_host_name_is_still_refused_when_it_resolves_to_loopback(server: HostileServer) -> None:
    fetcher = Fetcher(FetchPolicy(allow_http=True, allow_hosts=["localhost"], timeout_s=TIMEOUT_S))
    assert failure(fetcher, server.url("/image.jpg", host="localhost")).reason == "address_not_allowed"
    assert server.requests == []


def test_connects_to_the_checked_address_not_a_second_lookup(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the first answer is public, every later one is the loopback test server.

    The fetcher must resolve once and connect to the address it checked. Connecting by host
    name (a second lookup inside the HTTP client) would reach the loopback server.
    """
    real_getaddrinfo = socket.getaddrinfo
    real_create_connection = socket.create_connection
    lookups: list[str] = []
    connects: list[tuple[str, int]] = []

    def rebinding_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.example":
            lookups.append(host)
            answer = "93.184.216.34" if len(lookups) == 1 else "127.0.0.1"
            return real_getaddrinfo(answer, port, *args, **kwargs)
        return real_getaddrinfo(host, port, *args, **kwargs)

    def recording_create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        connects.append(address)
        if address[0] == "93.184.216.34":  # no real internet from tests: pretend it refused
            raise ConnectionRefusedError(111, "Connection refused")
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", recording_create_connection)
    fetcher = Fetcher(FetchPolicy(allow_http=True, timeout_s=TIMEOUT_S))
    error = failure(fetcher, f"http://rebind.example:{server.port}/image.jpg")
    assert error.reason == "http_error" and "ConnectError" in str(error)
    assert lookups == ["rebind.example"]
    assert connects == [("93.184.216.34", server.port)]
    assert server.requests == []


def test_host_header_keeps_the_name_when_connecting_by_address(server: HostileServer) -> None:
    fetcher = Fetcher(open_policy(server, allow_hosts=["localhost"]))
    assert fetcher.fetch(server.url("/echo-host", host="localhost")) == f"localhost:{server.port}".encode()


# --- a policy that reaches the server -----------------------------------------------------------


def test_reads_an_image_whatever_its_content_type(
    fetcher: Fetcher, server: HostileServer, image: bytes
) -> None:
    assert fetcher.fetch(server.url("/image.jpg")) == image
    assert fetcher.fetch(server.url("/image-as-text.txt")) == image
    assert fetcher.fetch(server.url("/redirect?to=/image.jpg")) == image  # a relative redirect


def test_asks_for_identity_encoding_and_refuses_a_compressed_body(
    fetcher: Fetcher, server: HostileServer
) -> None:
    error = failure(fetcher, server.url("/gzip"))
    assert error.reason == "http_error" and "Content-Encoding 'gzip'" in str(error)
    assert server.requests[-1][1].get("Accept-Encoding") == "identity"


@pytest.mark.parametrize(
    "target",
    ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/a.jpg", "http://images.example.org/a.jpg"],
)
def test_redirect_to_a_host_not_allowed_is_refused(
    fetcher: Fetcher, server: HostileServer, target: str
) -> None:
    assert failure(fetcher, server.url(f"/redirect?to={target}")).reason == "host_not_allowed"


def test_redirect_to_another_port_needs_that_port_allowed(
    server: HostileServer, other_server: HostileServer, image: bytes
) -> None:
    elsewhere = other_server.url("/image.jpg")
    pinned = Fetcher(open_policy(server))  # allow_hosts = ["127.0.0.1:<server.port>"]
    assert failure(pinned, server.url(f"/redirect?to={elsewhere}")).reason == "host_not_allowed"
    assert other_server.requests == []
    any_port = Fetcher(open_policy(server, allow_hosts=["127.0.0.1"]))  # a bare host allows every port
    assert any_port.fetch(server.url(f"/redirect?to={elsewhere}")) == image


def test_redirect_to_loopback_is_refused_when_private_networks_are(server: HostileServer) -> None:
    """The check runs on every hop: an allowed public host cannot bounce the fetcher inward."""
    fetcher = Fetcher(FetchPolicy(allow_http=True, allow_hosts=["127.0.0.1"], timeout_s=TIMEOUT_S))
    assert failure(fetcher, server.url("/redirect?to=/image.jpg")).reason == "address_not_allowed"


def test_redirect_loop_stops(fetcher: Fetcher, server: HostileServer) -> None:
    assert failure(fetcher, server.url("/loop")).reason == "too_many_redirects"
    assert paths(server) == ["/loop"] * (fetcher.policy.max_redirects + 1)


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        ("/redirect?to=file:///etc/passwd", "unsupported_scheme"),
        ("/redirect?to=http://[::1", "http_error"),  # httpx: "Invalid URL in location header"
        ("/redirect-no-location", "http_error"),
    ],
)
def test_bad_redirects(fetcher: Fetcher, server: HostileServer, route: str, reason: str) -> None:
    assert failure(fetcher, server.url(route)).reason == reason


@pytest.mark.parametrize("route", ["/never", "/stall", "/drip"])
def test_stalled_and_slow_servers_time_out_within_the_deadline(
    fetcher: Fetcher, server: HostileServer, route: str
) -> None:
    started = time.monotonic()
    assert failure(fetcher, server.url(route)).reason == "timeout"
    elapsed = time.monotonic() - started
    assert TIMEOUT_S * 0.9 <= elapsed < SLACK_S, elapsed


def test_deadline_is_total_not_per_read(fetcher: Fetcher, server: HostileServer) -> None:
    """One byte every 0.95 s: each read is within the timeout, the whole fetch is not.

    A per-read timeout alone would end this only after the second byte (~1.9 s).
    """
    started = time.monotonic()
    assert failure(fetcher, server.url("/drip?every=0.95")).reason == "timeout"
    assert time.monotonic() - started < SLACK_S


def test_deadline_covers_the_whole_redirect_chain(fetcher: Fetcher, server: HostileServer) -> None:
    started = time.monotonic()
    assert failure(fetcher, server.url("/redirect?to=/stall")).reason == "timeout"
    assert time.monotonic() - started < SLACK_S


def test_endless_body_hits_the_byte_cap(server: HostileServer) -> None:
    fetcher = Fetcher(open_policy(server, max_bytes=256 * 1024))
    assert failure(fetcher, server.url("/forever")).reason == "too_large"


def test_huge_content_length_is_refused_before_reading(fetcher: Fetcher, server: HostileServer) -> None:
    started = time.monotonic()
    assert failure(fetcher, server.url("/huge-length")).reason == "too_large"
    assert time.monotonic() - started < TIMEOUT_S


@pytest.mark.parametrize(("status", "retriable"), [(404, False), (403, False), (500, True), (503, True)])
def test_http_errors(fetcher: Fetcher, server: HostileServer, status: int, retriable: bool) -> None:
    error = failure(fetcher, server.url(f"/status/{status}"))
    assert (error.reason, error.retriable) == ("http_error", retriable)
    assert str(status) in str(error)


def test_nothing_listening_is_an_http_error(server: HostileServer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    fetcher = Fetcher(open_policy(server, allow_hosts=["127.0.0.1"]))
    assert failure(fetcher, f"http://127.0.0.1:{closed_port}/a.jpg").reason == "http_error"


# --- malformed URLs never escape as anything but FetchError -------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:99999/a.jpg", "bad_uri"),
        ("http://[::1/a.jpg", "bad_uri"),
        ("http:///a.jpg", "bad_uri"),
        (f"http://{'a' * 64}.example.com/a.jpg", "unresolvable_host"),  # a DNS label over 63 bytes
    ],
)
def test_malformed_urls_are_fetch_errors(url: str, reason: str) -> None:
    fetcher = Fetcher(FetchPolicy(allow_http=True, timeout_s=TIMEOUT_S))
    assert failure(fetcher, url).reason == reason


def test_allowed_host_entries_are_validated() -> None:
    with pytest.raises(ValueError, match="host:port"):
        Fetcher(FetchPolicy(allow_http=True, allow_hosts=["images.example.org/path"]))

"""URLs that try to reach the server's own network (SSRF), redirect into it, or hold a worker with a
slow-loris answer. Real sockets on 127.0.0.1 throughout.

Already covered in tests/workers/test_fetching.py (not repeated here): loopback refused without the
allowance, the private/link-local list (127/8, 10/8, 192.168/16, 172.16/12, 169.254.169.254, ::1, fe80::,
0.0.0.0), a redirect to the metadata service, redirect loops, non-http schemes, oversized bodies with and
without a Content-Length, a body trickled past the deadline, text/html refused, 5xx transient and 4xx
permanent.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collections_app.models import Artwork
from tests.workers.image_server import ImageServer, image_server_fixture  # noqa: F401 - the fixture
from workers.fetching import FetchRefused, fetch_bytes, resolve_checked
from workers.pipeline.errors import TRANSIENT_ERRORS, PermanentStageError
from workers.pipeline.fetch import stage_fetch

LOCAL = ["127.0.0.1"]


def fetch(url: str, *, allowed: list[str] = LOCAL, timeout_s: float = 5.0) -> bytes:
    return fetch_bytes(url, timeout_s=timeout_s, max_bytes=5_000_000, allowed_hosts=allowed).data


# --- Addresses -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",  # 127.0.0.1 as one decimal number
        "0x7f.1",  # hexadecimal, short form
        "017700000001",  # octal
        "127.1",
        "localhost",
        "0",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:169.254.169.254",
        "::127.0.0.1",  # IPv4-compatible (deprecated)
        "2002:7f00:1::",  # 6to4 around 127.0.0.1
        "2002:a9fe:a9fe::",  # 6to4 around the metadata service
        "64:ff9b::a9fe:a9fe",  # NAT64 around the metadata service
        "64:ff9b:1::a00:1",  # local-use NAT64
        "fd00::1",  # unique local
        "100.64.0.1",  # shared (carrier-grade NAT)
        "198.18.0.1",  # benchmarking
        "192.0.0.170",
        "224.0.0.1",  # multicast
        "255.255.255.255",
    ],
)
def test_every_spelling_of_a_private_address_is_refused(host: str) -> None:
    with pytest.raises(FetchRefused, match="private, loopback or link-local"):
        resolve_checked(host, 80, allowed_hosts=[])


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_an_ipv4_address_is_judged_the_same_in_every_ipv6_wrapping(value: int) -> None:
    v4 = ipaddress.IPv4Address(value)
    public = v4.is_global and not v4.is_multicast
    wrappings = [
        str(v4),
        f"::ffff:{v4}",  # mapped
        str(ipaddress.IPv6Address((0x2002 << 112) | (value << 80))),  # 6to4
        str(ipaddress.IPv6Address((0x0064FF9B << 96) | value)),  # NAT64
    ]
    for address in wrappings:
        if public:
            assert resolve_checked(address, 80, allowed_hosts=[]) == address
        else:
            with pytest.raises(FetchRefused):
                resolve_checked(address, 80, allowed_hosts=[])


def test_a_loopback_url_in_any_form_is_refused_before_connecting(image_server: ImageServer) -> None:
    image_server.route("/a.jpg", body=b"never served")
    port = image_server.port
    for url in (
        f"http://[::ffff:127.0.0.1]:{port}/a.jpg",
        f"http://2130706433:{port}/a.jpg",
        f"http://user:secret@localhost:{port}/a.jpg",
        f"http://127.1:{port}/a.jpg",
    ):
        with pytest.raises(FetchRefused, match="private, loopback or link-local"):
            fetch(url, allowed=[])
    assert image_server.routes["/a.jpg"].hits == 0


def test_redirects_into_the_private_network_are_refused_at_the_hop(image_server: ImageServer) -> None:
    target = image_server.route("/secret", body=b"internal")
    port = image_server.port
    for n, location in enumerate(
        [
            f"http://localhost:{port}/secret",  # same machine, a name that is not allowed
            f"http://2130706433:{port}/secret",
            f"http://[::1]:{port}/secret",
            "http://[fd00::1]/secret",
            "http://100.100.100.200/latest/meta-data/",  # Alibaba's metadata service
        ]
    ):
        url = image_server.route(f"/hop{n}", status=302, location=location)
        with pytest.raises(FetchRefused, match="private, loopback or link-local"):
            fetch(url)
    assert image_server.routes["/secret"].hits == 0, target
    for scheme_hop in ("file:///etc/passwd", "gopher://127.0.0.1:6379/_FLUSHALL"):
        url = image_server.route("/scheme", status=301, location=scheme_hop)
        with pytest.raises(FetchRefused, match="not an http"):
            fetch(url)


@pytest.mark.django_db
def test_the_fetch_stage_fails_an_artwork_pointing_at_the_metadata_service() -> None:
    artwork = Artwork.objects.create(
        source="t", source_id="ssrf", image_url="http://169.254.169.254/latest/meta-data/iam/"
    )
    with pytest.raises(PermanentStageError, match="169.254.169.254"):
        stage_fetch(artwork_id=artwork.pk)
    artwork = Artwork.objects.create(
        source="t", source_id="ssrf2", iiif_url="http://[::ffff:10.0.0.1]/iiif/x"
    )
    with pytest.raises(PermanentStageError, match="private"):
        stage_fetch(artwork_id=artwork.pk)


# --- Slow-loris ----------------------------------------------------------------------------------------


class SlowLorisServer:
    """A real TCP server on 127.0.0.1 that answers one byte at a time: its status line and headers
    (``headers=True``, which per-read timeouts never catch) or its body. It gives up after ``give_up_s``, so
    a fetcher without an overall deadline makes the test fail instead of hanging it."""

    def __init__(self, *, headers: bool, pause_s: float = 0.05, give_up_s: float = 20.0) -> None:
        self.headers, self.pause_s, self.give_up_s = headers, pause_s, give_up_s
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
        if self.headers:
            payload = head + b"".join(b"X-Padding-%d: %s\r\n" % (i, b"a" * 60) for i in range(90))
        else:
            payload = head + b"Connection: close\r\n\r\n" + b"\xff\xd8" + b"\x00" * 100_000
        started = time.monotonic()
        with conn:
            try:
                conn.recv(65536)
                for i in range(len(payload)):
                    if self._stop.is_set() or time.monotonic() - started > self.give_up_s:
                        return
                    conn.sendall(payload[i : i + 1])
                    time.sleep(self.pause_s)
            except OSError:
                return  # the fetcher hung up: what the test wants

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slow.jpg"

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture
def slow_headers() -> Iterator[SlowLorisServer]:
    server = SlowLorisServer(headers=True)
    yield server
    server.close()


@pytest.fixture
def slow_body() -> Iterator[SlowLorisServer]:
    server = SlowLorisServer(headers=False)
    yield server
    server.close()


def test_a_server_trickling_its_headers_is_cut_off_at_the_deadline(slow_headers: SlowLorisServer) -> None:
    started = time.monotonic()
    with pytest.raises(FetchRefused, match="too slow"):
        fetch(slow_headers.url(), timeout_s=1.5)
    assert time.monotonic() - started < 10  # not the server's 20 s: the deadline, not the server, ended it


def test_a_body_trickled_without_a_length_is_not_taken_as_complete(slow_body: SlowLorisServer) -> None:
    started = time.monotonic()
    with pytest.raises(FetchRefused, match="too slow"):
        fetch(slow_body.url(), timeout_s=1.5)
    assert time.monotonic() - started < 10


def test_a_server_that_never_answers_is_a_transient_timeout() -> None:
    """Silence (an overloaded server) is retried later; only a server that keeps trickling is "too slow"."""
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel does) and never says a word
    try:
        started = time.monotonic()
        with pytest.raises(TRANSIENT_ERRORS):
            fetch(f"http://127.0.0.1:{silent.getsockname()[1]}/a.jpg", timeout_s=1.0)
        assert time.monotonic() - started < 10
    finally:
        silent.close()

"""The SSRF-safe fetcher against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.workers.image_server import ImageServer, image_server_fixture  # noqa: F401 - the fixture
from workers.fetching import FetchRefused, fetch_bytes, resolve_checked
from workers.pipeline.errors import TransientFetchError

LOCAL = ["127.0.0.1"]


@pytest.fixture(scope="module")
def jpeg(art_dev: Path) -> bytes:
    return sorted((art_dev / "images").glob("*.jpg"))[0].read_bytes()


def fetch(
    url: str, *, allowed: list[str] = LOCAL, max_bytes: int = 5_000_000, timeout_s: float = 5.0
) -> bytes:  # noqa: E501
    return fetch_bytes(url, timeout_s=timeout_s, max_bytes=max_bytes, allowed_hosts=allowed).data


def test_fetches_an_image_from_an_allowed_host(image_server: ImageServer, jpeg: bytes) -> None:
    assert fetch(image_server.route("/a.jpg", body=jpeg)) == jpeg


def test_loopback_is_refused_without_the_allowance(image_server: ImageServer, jpeg: bytes) -> None:
    url = image_server.route("/a.jpg", body=jpeg)
    with pytest.raises(FetchRefused, match="private, loopback or link-local"):
        fetch(url, allowed=[])
    assert image_server.routes["/a.jpg"].hits == 0  # refused before any connection


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "192.168.0.10", "172.16.5.5", "169.254.169.254", "::1", "fe80::1", "0.0.0.0"],
)
def test_private_addresses_are_refused(address: str) -> None:
    with pytest.raises(FetchRefused):
        resolve_checked(address, 80, allowed_hosts=[])


def test_a_public_address_passes_the_check() -> None:
    assert resolve_checked("93.184.215.14", 80, allowed_hosts=[]) == "93.184.215.14"


def test_redirect_to_the_metadata_service_is_refused(image_server: ImageServer) -> None:
    url = image_server.route("/r", status=302, location="http://169.254.169.254/latest/meta-data/", body=b"")
    with pytest.raises(FetchRefused, match="169.254.169.254"):
        fetch(url)


def test_redirects_are_followed_hop_by_hop(image_server: ImageServer, jpeg: bytes) -> None:
    image_server.route("/final.jpg", body=jpeg)
    image_server.route("/hop2", status=301, location="/final.jpg")
    url = image_server.route("/hop1", status=302, location=image_server.url("/hop2"))
    assert fetch(url) == jpeg


def test_redirect_loops_end(image_server: ImageServer) -> None:
    url = image_server.route("/loop", status=302, location="/loop")
    with pytest.raises(FetchRefused, match="redirects"):
        fetch(url)


def test_declared_oversize_body_is_refused(image_server: ImageServer, jpeg: bytes) -> None:
    url = image_server.route("/big.jpg", body=jpeg)
    with pytest.raises(FetchRefused, match="over the limit"):
        fetch(url, max_bytes=len(jpeg) - 1)


def test_oversize_body_without_a_length_is_cut_off(image_server: ImageServer) -> None:
    body = b"\xff" * 300_000
    url = image_server.route("/stream.jpg", body=body, declared_length=-1)
    with pytest.raises(FetchRefused, match="over the limit"):
        fetch(url, max_bytes=200_000)


def test_a_trickling_body_is_cut_off_at_the_deadline(image_server: ImageServer) -> None:
    url = image_server.route("/slow.jpg", body=b"x" * 1000, trickle_s=0.05)  # would take 50 s
    started = time.monotonic()
    with pytest.raises(FetchRefused, match="too slow"):
        fetch(url, timeout_s=1.0)
    assert time.monotonic() - started < 10


def test_non_image_content_type_is_refused(image_server: ImageServer) -> None:
    url = image_server.route("/page", body=b"<html>login</html>", content_type="text/html; charset=utf-8")
    with pytest.raises(FetchRefused, match="text/html"):
        fetch(url)


def test_server_errors_are_transient_and_client_errors_permanent(image_server: ImageServer) -> None:
    with pytest.raises(TransientFetchError, match="503"):
        fetch(image_server.route("/down", fail_first=1, body=b""))
    with pytest.raises(FetchRefused, match="404"):
        fetch(image_server.url("/missing"))


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.org/a.jpg", "gopher://x/", "http:///nohost"]
)
def test_only_http_urls(url: str) -> None:
    with pytest.raises(FetchRefused, match="http"):
        fetch(url)

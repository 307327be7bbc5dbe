"""HTTP(S) image fetching that cannot be turned against the server's own network (SSRF).

Every hop of a redirect chain is checked: the host is resolved once, every address it resolves to must be a
public one (unless the host is listed in ``settings.SEMART_FETCH['allowed_hosts']``), and the connection goes
to the address that was checked, so a second DNS answer cannot swap in 127.0.0.1 (DNS rebinding). Bodies are
read in chunks under a byte cap and an overall deadline, so a huge or trickling response is cut off.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import urllib3

from workers.pipeline.errors import PermanentStageError, TransientFetchError

REDIRECT_STATUSES = {301, 302, 303, 307, 308}
MAX_REDIRECTS = 5
CHUNK = 64 * 1024
USER_AGENT = "Semart/1.0 (+collection image fetcher)"
# Servers that do not know what they serve say octet-stream; the bytes are verified by decoding anyway.
ACCEPTED_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")


class FetchRefused(PermanentStageError):
    """The URL, its address, or its response is refused; fetching it again would be refused again."""


@dataclass(frozen=True)
class FetchedFile:
    data: bytes
    content_type: str
    url: str  # after redirects


def _address_is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    # is_global is false for private, loopback, link-local (169.254.169.254, the cloud metadata service),
    # shared (100.64/10), reserved and unspecified ranges.
    return ip.is_global and not ip.is_multicast


def resolve_checked(host: str, port: int, *, allowed_hosts: list[str]) -> str:
    """The address to connect to, after checking every address the host resolves to."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise FetchRefused(f"the image host {host!r} does not resolve ({exc.strerror})") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise FetchRefused(f"the image host {host!r} has no address")
    if host.lower() not in {h.lower() for h in allowed_hosts}:
        private = [a for a in addresses if not _address_is_public(a)]
        if private:
            raise FetchRefused(
                f"refused to fetch from {host!r}: it resolves to a private, loopback or link-local address "
                f"({', '.join(private)}); list the host in SEMART_FETCH_ALLOWED_HOSTS if it is trusted"
            )
    return addresses[0]


def _pool(scheme: str, host: str, address: str, port: int, timeout_s: float) -> urllib3.HTTPConnectionPool:
    timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
    if scheme == "https":
        # Connect to the checked address but verify the certificate (and send SNI) for the host name.
        return urllib3.HTTPSConnectionPool(
            address,
            port,
            timeout=timeout,
            retries=False,
            server_hostname=host,
            assert_hostname=host,
            cert_reqs="CERT_REQUIRED",
        )
    return urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False)


def fetch_bytes(
    url: str,
    *,
    timeout_s: float,
    max_bytes: int,
    allowed_hosts: list[str],
    accepted_types: tuple[str, ...] = ACCEPTED_TYPES,
    accept: str = "image/*",
) -> FetchedFile:
    """GET a URL with every safety check; raises FetchRefused (permanent) or a transient error.

    ``accepted_types`` are Content-Type prefixes (images by default; the importers pass JSON for
    manifests)."""
    deadline = time.monotonic() + timeout_s
    for _hop in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchRefused(f"not an http(s) URL: {url[:200]!r}")
        host = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = resolve_checked(host, port, allowed_hosts=allowed_hosts)
        default_port = port == (443 if parts.scheme == "https" else 80)
        headers = {
            "Host": host if default_port else f"{host}:{port}",
            "User-Agent": USER_AGENT,
            "Accept": accept,
        }
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        pool = _pool(parts.scheme, host, address, port, timeout_s)
        try:
            response = pool.urlopen(
                "GET",
                path,
                headers=headers,
                redirect=False,
                retries=False,
                preload_content=False,
                assert_same_host=False,
            )
        except urllib3.exceptions.SSLError as exc:
            raise FetchRefused(f"TLS error talking to {host!r}: {exc}") from exc
        try:
            if response.status in REDIRECT_STATUSES:
                location = response.headers.get("Location")
                if not location:
                    raise FetchRefused(f"{host!r} answered a redirect without a Location")
                url = urljoin(url, location)
                continue
            if response.status == 429 or response.status >= 500:
                raise TransientFetchError(f"the image server answered HTTP {response.status} for {url[:200]}")
            if response.status != 200:
                raise FetchRefused(f"the image server answered HTTP {response.status} for {url[:200]}")
            content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if content_type and not content_type.startswith(accepted_types):
                raise FetchRefused(
                    f"the URL serves {content_type!r}, not what was expected ({accept}): {url[:200]}"
                )
            data = _read_capped(response, max_bytes=max_bytes, deadline=deadline, url=url)
            return FetchedFile(data=data, content_type=content_type, url=url)
        finally:
            response.release_conn()
            pool.close()
    raise FetchRefused(f"more than {MAX_REDIRECTS} redirects starting at {url[:200]}")


def _read_capped(response: Any, *, max_bytes: int, deadline: float, url: str) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise FetchRefused(
            f"the image is {int(declared):,} bytes, over the limit of {max_bytes:,}: {url[:200]}"
        )
    chunks: list[bytes] = []
    total = 0
    while True:
        if time.monotonic() > deadline:
            raise FetchRefused(f"the image server was too slow: gave up after the time limit on {url[:200]}")
        # read1 returns what has arrived, so the deadline is checked even while a server trickles bytes.
        chunk = response.read1(CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise FetchRefused(f"the image is over the limit of {max_bytes:,} bytes: {url[:200]}")
        chunks.append(chunk)
    return b"".join(chunks)

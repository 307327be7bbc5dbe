"""HTTP(S) image fetching that cannot be turned against the server's own network (SSRF).

Every hop of a redirect chain is checked: the host is resolved once, every address it resolves to must be a
public one (unless the host is listed in ``settings.SEMART_FETCH['allowed_hosts']``), and the connection goes
to the address that was checked, so a second DNS answer cannot swap in 127.0.0.1 (DNS rebinding). Bodies are
read in chunks under a byte cap and an overall deadline, so a huge or trickling response is cut off.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import urllib3

from workers.pipeline.errors import PermanentStageError, TransientFetchError

REDIRECT_STATUSES = {301, 302, 303, 307, 308}
MAX_REDIRECTS = 5
# The watchdog cuts a connection this long after the deadline, so a server that sends nothing at all still
# meets the read timeout first (transient: an overloaded server is tried again later), while one that keeps
# trickling bytes, resetting that timeout, is cut off as too slow (permanent).
WATCHDOG_GRACE_S = 1.0
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


NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: local use, never a public address
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo client, NAT64, compatible), if any.

    ``is_global`` judges only the IPv6 prefix, so 2002:7f00:1:: (6to4) or 64:ff9b::7f00:1 (NAT64) pass it
    while a gateway would deliver them to 127.0.0.1."""
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    if ip in NAT64 or (ip in IPV4_COMPATIBLE and int(ip) > 0xFFFF):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _address_is_public(address: str) -> bool:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in NAT64_LOCAL:
            return False
        ip = _embedded_ipv4(ip) or ip
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


class _Watchdog:
    """Cuts a fetch's connections when its overall deadline passes.

    Socket timeouts bound each read, not the response: a server that sends its status line or headers a byte
    at a time (slow-loris) would otherwise hold a worker as long as it liked, since every byte restarts the
    read timeout. At the deadline the sockets are shut down, which ends whatever read is blocked on them."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        threading.Thread(target=self._run, name="fetch-deadline", daemon=True).start()

    def watch(self, connection: Any) -> Any:
        with self._lock:
            self._connections.append(connection)
        return connection

    def _run(self) -> None:
        while not self._done.wait(max(0.0, self.deadline - time.monotonic())):
            self.expired = True
            with self._lock:
                connections = list(self._connections)
            for connection in connections:
                sock = getattr(connection, "sock", None)
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
            # Again shortly, for a connection that had no socket yet on this pass.
            self._done.wait(0.05)

    def stop(self) -> None:
        self._done.set()


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    watchdog: _Watchdog

    def _new_conn(self) -> Any:
        return self.watchdog.watch(super()._new_conn())


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    watchdog: _Watchdog

    def _new_conn(self) -> Any:
        return self.watchdog.watch(super()._new_conn())


def _pool(
    scheme: str, host: str, address: str, port: int, timeout_s: float, watchdog: _Watchdog
) -> urllib3.HTTPConnectionPool:
    timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
    pool: _WatchedHTTPPool | _WatchedHTTPSPool
    if scheme == "https":
        # Connect to the checked address but verify the certificate (and send SNI) for the host name.
        pool = _WatchedHTTPSPool(
            address,
            port,
            timeout=timeout,
            retries=False,
            server_hostname=host,
            assert_hostname=host,
            cert_reqs="CERT_REQUIRED",
        )
    else:
        pool = _WatchedHTTPPool(address, port, timeout=timeout, retries=False)
    pool.watchdog = watchdog
    return pool


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
    manifests). ``timeout_s`` bounds the whole fetch, redirects, headers and body included (plus the
    watchdog's grace)."""
    deadline = time.monotonic() + timeout_s
    watchdog = _Watchdog(deadline + WATCHDOG_GRACE_S)
    try:
        return _fetch_hops(
            url,
            timeout_s=timeout_s,
            max_bytes=max_bytes,
            allowed_hosts=allowed_hosts,
            accepted_types=accepted_types,
            accept=accept,
            deadline=deadline,
            watchdog=watchdog,
        )
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        if watchdog.expired:
            raise FetchRefused(_too_slow(url)) from exc
        raise
    finally:
        watchdog.stop()


def _too_slow(url: str) -> str:
    return f"the server was too slow: gave up after the time limit on {url[:200]}"


def _fetch_hops(
    url: str,
    *,
    timeout_s: float,
    max_bytes: int,
    allowed_hosts: list[str],
    accepted_types: tuple[str, ...],
    accept: str,
    deadline: float,
    watchdog: _Watchdog,
) -> FetchedFile:
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
        pool = _pool(parts.scheme, host, address, port, timeout_s, watchdog)
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
                raise TransientFetchError(f"the server answered HTTP {response.status} for {url[:200]}")
            if response.status != 200:
                raise FetchRefused(f"the server answered HTTP {response.status} for {url[:200]}")
            content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if content_type and not content_type.startswith(accepted_types):
                raise FetchRefused(
                    f"the URL serves {content_type!r}, not what was expected ({accept}): {url[:200]}"
                )
            data = _read_capped(response, max_bytes=max_bytes, deadline=deadline, url=url)
            if watchdog.expired:  # the read ended because the watchdog cut it: the body is incomplete
                raise FetchRefused(_too_slow(url))
            return FetchedFile(data=data, content_type=content_type, url=url)
        finally:
            response.release_conn()
            pool.close()
    raise FetchRefused(f"more than {MAX_REDIRECTS} redirects starting at {url[:200]}")


def _read_capped(response: Any, *, max_bytes: int, deadline: float, url: str) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise FetchRefused(
            f"the file is too large: {int(declared):,} bytes, over the limit of {max_bytes:,}: {url[:200]}"
        )
    chunks: list[bytes] = []
    total = 0
    while True:
        if time.monotonic() > deadline:
            raise FetchRefused(_too_slow(url))
        # read1 returns what has arrived, so the deadline is checked even while a server trickles bytes.
        chunk = response.read1(CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise FetchRefused(f"the file is too large: over the limit of {max_bytes:,} bytes: {url[:200]}")
        chunks.append(chunk)
    return b"".join(chunks)

"""Fetching an import's documents (IIIF manifests, museum API pages) from a URL without becoming an SSRF hole.

Only http(s); every address the host resolves to must be public unless the host is listed in
``SEMART_FETCH['allowed_hosts']``; redirects are followed by hand so each hop is checked; time and size are
bounded. The address check is the image fetcher's (``workers.fetching.resolve_checked``); the request goes
through httpx, which resolves the name again, so unlike ``workers.fetching.fetch_bytes`` this does not pin the
checked address (a DNS-rebinding window). ``fetch_bytes`` only accepts image content types; once it takes the
accepted types as a parameter, this should call it instead.
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

from django.conf import settings

MAX_REDIRECTS = 5
DOCUMENT_MAX_BYTES = 20 * 1024 * 1024  # a manifest or an API page; images have their own, larger limit


class FetchRefused(ValueError):
    """The URL is not one we fetch (scheme, private address, too large, bad status)."""


def check_url(url: str) -> None:
    """Refuse what the image fetcher refuses: one address policy for the whole site (workers/fetching.py)."""
    from workers.fetching import FetchRefused as ImageFetchRefused
    from workers.fetching import resolve_checked

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchRefused(f"only http(s) URLs with a host are fetched: {url!r}")
    try:
        resolve_checked(
            parts.hostname,
            parts.port or (443 if parts.scheme == "https" else 80),
            allowed_hosts=list(settings.SEMART_FETCH.get("allowed_hosts", [])),
        )
    except ImageFetchRefused as exc:
        raise FetchRefused(str(exc)) from exc


def fetch_document(
    url: str, *, max_bytes: int = DOCUMENT_MAX_BYTES, accept: str = "application/json"
) -> bytes:
    import httpx

    try:
        return _fetch(url, max_bytes=max_bytes, accept=accept)
    except httpx.HTTPError as exc:
        raise FetchRefused(f"cannot fetch {url}: {exc}") from exc


def _fetch(url: str, *, max_bytes: int, accept: str) -> bytes:
    import httpx

    timeout = httpx.Timeout(settings.SEMART_FETCH["timeout_s"])
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            check_url(url)
            with client.stream(
                "GET", url, headers={"Accept": accept, "User-Agent": "Semart importer"}
            ) as resp:
                if resp.is_redirect:
                    url = urljoin(url, resp.headers.get("location", ""))
                    continue
                if resp.status_code != 200:
                    raise FetchRefused(f"{url} answered HTTP {resp.status_code}")
                declared = int(resp.headers.get("content-length") or 0)
                if declared > max_bytes:
                    raise FetchRefused(f"{url} is too large ({declared} bytes, limit {max_bytes})")
                body = bytearray()
                for chunk in resp.iter_bytes():
                    body.extend(chunk)
                    if len(body) > max_bytes:
                        raise FetchRefused(f"{url} is larger than the limit of {max_bytes} bytes")
                return bytes(body)
    raise FetchRefused(f"too many redirects from {url}")

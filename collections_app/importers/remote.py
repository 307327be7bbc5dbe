"""Fetching an import's documents (IIIF manifests, museum API pages) from a URL without becoming an SSRF hole.

The image fetcher's rules, through ``workers.fetching.fetch_bytes``: only http(s); every address the host
resolves to must be public unless the host is listed in ``SEMART_FETCH['allowed_hosts']``, and the request
goes to the checked address (no DNS-rebinding window); redirects are followed by hand so each hop is checked;
size and the whole exchange's time are bounded, so a server trickling its headers or body is cut off.
"""

from __future__ import annotations

from django.conf import settings

DOCUMENT_MAX_BYTES = 20 * 1024 * 1024  # a manifest or an API page; images have their own, larger limit


class FetchRefused(ValueError):
    """The URL is not one we fetch (scheme, private address, too large, bad status)."""


# What servers call JSON documents; IIIF servers often say ld+json, some say text/plain or octet-stream.
DOCUMENT_TYPES = (
    "application/json",
    "application/ld+json",
    "text/json",
    "text/plain",
    "application/octet-stream",
    "binary/octet-stream",
)


def fetch_document(
    url: str, *, max_bytes: int = DOCUMENT_MAX_BYTES, accept: str = "application/json"
) -> bytes:
    import urllib3

    from workers.fetching import fetch_bytes
    from workers.pipeline.errors import PermanentStageError, TransientFetchError

    # fetch_bytes checks the scheme and every address the host resolves to, then connects to the address
    # it checked (one address policy for the whole site; the host was resolved twice before).
    try:
        return fetch_bytes(
            url,
            timeout_s=settings.SEMART_FETCH["timeout_s"],
            max_bytes=max_bytes,
            allowed_hosts=list(settings.SEMART_FETCH.get("allowed_hosts", [])),
            accepted_types=DOCUMENT_TYPES,
            accept=accept,
        ).data
    # Refused, a 4xx/5xx, or the connection failed or timed out (urllib3's errors and OSErrors).
    except (PermanentStageError, TransientFetchError, urllib3.exceptions.HTTPError, OSError) as exc:
        raise FetchRefused(f"cannot fetch {url[:200]}: {exc}") from exc

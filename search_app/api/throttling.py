"""Rate limits per key and for anonymous callers, counted in the Redis cache (shared by every web process)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from search_app.models import ApiKey


class ApiRateThrottle(SimpleRateThrottle):
    """A key's own rate, or the default key rate; anonymous callers share the lower rate per IP address.
    The same sliding log of request times as DRF's throttle, kept in a Redis sorted set
    (``FailSoftRedisCache.sliding_log``): one round trip a request.

    Rates are read per request (not at import, as DRF's DEFAULT_THROTTLE_RATES are), so a deployment or a
    test changes them in settings and a cataloger changes a key's rate in the admin without a restart.
    """

    scope = "semart_api"

    retry_after: float | None = None

    def __init__(self) -> None:  # SimpleRateThrottle reads the rate here; ours depends on the request
        pass

    def allow_request(self, request: Request, view: Any) -> bool:
        api_key = request.auth if isinstance(request.auth, ApiKey) else None
        rate = (api_key.rate if api_key else "") or (
            settings.SEMART_API["key_rate"] if api_key else settings.SEMART_API["anon_rate"]
        )
        self.rate = rate
        self.num_requests, self.duration = self.parse_rate(rate)
        sliding_log = getattr(self.cache, "sliding_log", None)
        if sliding_log is None:  # another cache backend: DRF's own log
            return super().allow_request(request, view)
        self.key = self.get_cache_key(request, view)
        self.retry_after = sliding_log(
            self.key, now=self.timer(), window_s=float(self.duration), limit=int(self.num_requests)
        )
        return self.retry_after is None

    def wait(self) -> float | None:
        if getattr(self.cache, "sliding_log", None) is None:
            return super().wait()
        return self.retry_after

    def get_cache_key(self, request: Request, view: Any) -> str:
        api_key = request.auth if isinstance(request.auth, ApiKey) else None
        ident = f"key:{api_key.pk}" if api_key else f"anon:{self.get_ident(request)}"
        return f"throttle:{self.scope}:{ident}"

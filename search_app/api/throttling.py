"""Rate limits per key and for anonymous callers, counted in the Redis cache (shared by every web process)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from search_app.models import ApiKey


class ApiRateThrottle(SimpleRateThrottle):
    """A key's own rate, or the default key rate; anonymous callers share the lower rate per IP address.

    Rates are read per request (not at import, as DRF's DEFAULT_THROTTLE_RATES are), so a deployment or a
    test changes them in settings and a cataloger changes a key's rate in the admin without a restart.
    """

    scope = "semart_api"

    def __init__(self) -> None:  # SimpleRateThrottle reads the rate here; ours depends on the request
        pass

    def allow_request(self, request: Request, view: Any) -> bool:
        api_key = request.auth if isinstance(request.auth, ApiKey) else None
        rate = (api_key.rate if api_key else "") or (
            settings.SEMART_API["key_rate"] if api_key else settings.SEMART_API["anon_rate"]
        )
        self.rate = rate
        self.num_requests, self.duration = self.parse_rate(rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request: Request, view: Any) -> str:
        api_key = request.auth if isinstance(request.auth, ApiKey) else None
        ident = f"key:{api_key.pk}" if api_key else f"anon:{self.get_ident(request)}"
        return f"throttle:{self.scope}:{ident}"

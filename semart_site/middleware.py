"""Security headers Django 5.2 does not set itself: Content-Security-Policy and Permissions-Policy.

Django 6.0 brings its own CSP middleware; until then this one builds the header from ``CSP_POLICY`` (a dict of
directive -> sources), with ``CSP_POLICY_OVERRIDES`` for URL prefixes whose third-party pages need more
(the API's Swagger UI and Redoc). A view that sets its own policy (the media view) keeps it.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse


def policy_header(policy: dict[str, list[str]]) -> str:
    return "; ".join(f"{name} {' '.join(sources)}".strip() for name, sources in policy.items())


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        base: dict[str, list[str]] = dict(settings.CSP_POLICY)
        self.default = policy_header(base)
        self.overrides = [
            (prefix, policy_header({**base, **extra}))
            for prefix, extra in sorted(
                getattr(settings, "CSP_POLICY_OVERRIDES", {}).items(), key=lambda item: -len(item[0])
            )
        ]
        self.header = (
            "Content-Security-Policy-Report-Only"
            if getattr(settings, "CSP_REPORT_ONLY", False)
            else "Content-Security-Policy"
        )
        self.permissions = getattr(settings, "PERMISSIONS_POLICY", "")

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response and self.header not in response:
            response[self.header] = self._policy_for(request.path)
        if self.permissions and "Permissions-Policy" not in response:
            response["Permissions-Policy"] = self.permissions
        return response

    def _policy_for(self, path: str) -> str:
        for prefix, header in self.overrides:
            if path.startswith(prefix):
                return header
        return self.default

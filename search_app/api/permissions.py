"""Scopes: anyone may read (at the anonymous rate), writing needs a key with the write scope."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, permissions
from rest_framework.request import Request

from search_app.models import ApiKey, ApiScope


class HasApiScope(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        # A search sent as POST (to upload an image) still only reads: views say so with post_is_read.
        reads = request.method in permissions.SAFE_METHODS or (
            request.method == "POST" and getattr(view, "post_is_read", False)
        )
        needed = ApiScope.READ if reads else ApiScope.WRITE
        api_key = request.auth if isinstance(request.auth, ApiKey) else None
        if needed == ApiScope.READ and api_key is None:
            return True
        if api_key is None:
            raise exceptions.NotAuthenticated("This operation needs an API key with the write scope.")
        if not api_key.has_scope(needed):
            raise exceptions.PermissionDenied(f"This API key lacks the {needed!s} scope.")
        return True

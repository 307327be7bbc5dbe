"""OpenAPI details drf-spectacular cannot infer from our permission class."""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from rest_framework.permissions import SAFE_METHODS


class ApiAutoSchema(AutoSchema):
    def get_auth(self) -> list[dict[str, Any]]:
        # Reads (and POST searches) work without a key, at the anonymous rate: the schema must say the key is
        # optional there, or clients (and schemathesis) rightly expect a 401 without one.
        auths: list[dict[str, Any]] = super().get_auth()
        reads = self.method in SAFE_METHODS or (
            self.method == "POST" and getattr(self.view, "post_is_read", False)
        )
        if reads and {} not in auths:
            auths.append({})
        return auths

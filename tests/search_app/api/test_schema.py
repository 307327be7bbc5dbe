"""The OpenAPI contract: it builds without warnings, is served, and its docs page needs no CDN."""

from __future__ import annotations

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_schema_builds_and_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    # --fail-on-warn turns any drf-spectacular warning (an unresolvable type, a name collision) into an error.
    call_command(
        "spectacular",
        "--validate",
        "--fail-on-warn",
        "--urlconf",
        "search_app.api.schema_urls",
        "--file",
        str(out),
    )
    text = out.read_text()
    for path in ("/api/v1/artworks/", "/api/v1/search/", "/api/v1/iconclass/{notation}/", "/api/v1/health/"):
        assert f"  {path}:" in text


def test_schema_and_docs_are_served(api):
    schema = api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    spec = schema.json()
    assert spec["openapi"].startswith("3.") and "/api/v1/artworks/{id}/status/" in spec["paths"]
    assert "ApiKey" in spec["components"]["securitySchemes"]
    assert all(p.startswith("/api/v1/") for p in spec["paths"])
    docs = api.get("/api/v1/docs/").content.decode()
    assert "swagger-ui" in docs and "/static/drf_spectacular_sidecar/" in docs
    assert "cdn" not in docs.lower() and "unpkg" not in docs.lower()

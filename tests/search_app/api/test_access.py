"""Who may do what, how fast, and the one error body every refusal uses."""

from __future__ import annotations

import pytest

from search_app.api.services import api_key_create
from search_app.models import ApiKey
from tests.factories import ArtworkFactory
from tests.search_app.api.conftest import assert_error, auth

pytestmark = pytest.mark.django_db


def test_anonymous_reads_are_allowed(api):
    artwork = ArtworkFactory()
    assert api.get("/api/v1/artworks/").status_code == 200
    assert api.get(f"/api/v1/artworks/{artwork.pk}/").json()["id"] == artwork.pk


def test_both_key_headers_are_accepted_and_a_wrong_key_is_401(api, read_key):
    assert api.get("/api/v1/artworks/", **auth(read_key)).status_code == 200
    assert api.get("/api/v1/artworks/", HTTP_X_API_KEY=read_key).status_code == 200
    response = api.get("/api/v1/artworks/", **auth(read_key + "x"))
    assert_error(response, 401, "authentication_failed")
    assert response["WWW-Authenticate"] == "Api-Key"


def test_deactivated_key_is_refused(api, read_key):
    ApiKey.objects.update(is_active=False)
    assert_error(api.get("/api/v1/artworks/", **auth(read_key)), 401, "authentication_failed")


def test_writing_needs_a_key_with_write_scope(api, read_key, write_key):
    artwork = ArtworkFactory()
    assert_error(api.delete(f"/api/v1/artworks/{artwork.pk}/"), 401, "not_authenticated")
    err = assert_error(
        api.delete(f"/api/v1/artworks/{artwork.pk}/", **auth(read_key)), 403, "permission_denied"
    )
    assert "write" in err["message"]
    assert_error(
        api.patch(f"/api/v1/artworks/{artwork.pk}/", {"title": "x"}, format="json", **auth(read_key)),
        403,
        "permission_denied",
    )
    artwork.refresh_from_db()  # nothing was lost
    assert api.delete(f"/api/v1/artworks/{artwork.pk}/", **auth(write_key)).status_code == 204
    assert_error(api.get(f"/api/v1/artworks/{artwork.pk}/"), 404, "not_found")


def test_errors_share_one_shape(api, write_key):
    assert_error(api.get("/api/v1/artworks/999999/"), 404, "not_found")
    assert_error(api.get("/api/v1/no-such-endpoint/"), 404, "not_found")
    assert_error(
        api.put("/api/v1/artworks/", {}, format="json", **auth(write_key)), 405, "method_not_allowed"
    )
    err = assert_error(api.get("/api/v1/artworks/?date_from=soon"), 400, "invalid")
    assert "date_from" in err["details"]
    err = assert_error(
        api.post("/api/v1/artworks/", "{not json", content_type="application/json", **auth(write_key)),
        400,
        "parse_error",
    )


def test_anonymous_rate_limit_gives_429_with_retry_after(api, settings, read_key):
    settings.SEMART_API = {**settings.SEMART_API, "anon_rate": "3/minute"}
    for _ in range(3):
        assert api.get("/api/v1/artworks/").status_code == 200
    response = api.get("/api/v1/artworks/")
    err = assert_error(response, 429, "throttled")
    assert 0 < int(response["Retry-After"]) <= 60
    assert err["details"]["retry_after"] == int(response["Retry-After"])
    # A key is counted on its own, at the higher key rate.
    assert api.get("/api/v1/artworks/", **auth(read_key)).status_code == 200


def test_a_keys_own_rate_overrides_the_default(api):
    _, slow = api_key_create(name="slow", scopes=["read"], rate="2/hour")
    _, fast = api_key_create(name="fast", scopes=["read"])
    for _ in range(2):
        assert api.get("/api/v1/artworks/", **auth(slow)).status_code == 200
    response = api.get("/api/v1/artworks/", **auth(slow))
    assert_error(response, 429, "throttled")
    assert int(response["Retry-After"]) > 60
    for _ in range(5):
        assert api.get("/api/v1/artworks/", **auth(fast)).status_code == 200


def test_health_is_never_throttled(api, settings):
    settings.SEMART_API = {**settings.SEMART_API, "anon_rate": "1/minute"}
    for _ in range(3):
        assert api.get("/api/v1/health/").status_code in (200, 503)


def test_cors_headers_only_for_configured_origins(api, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://partner.example.org"]
    ok = api.get("/api/v1/artworks/", HTTP_ORIGIN="https://partner.example.org")
    assert ok["Access-Control-Allow-Origin"] == "https://partner.example.org"
    other = api.get("/api/v1/artworks/", HTTP_ORIGIN="https://evil.example.com")
    assert "Access-Control-Allow-Origin" not in other
    preflight = api.options(
        "/api/v1/artworks/",
        HTTP_ORIGIN="https://partner.example.org",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="x-api-key",
    )
    assert preflight.status_code == 200
    assert "x-api-key" in preflight["Access-Control-Allow-Headers"]
    # The site's own pages are not opened to other origins.
    page = api.get("/", HTTP_ORIGIN="https://partner.example.org")
    assert "Access-Control-Allow-Origin" not in page


def test_unknown_urls_answer_json_404_for_every_method(write_key):
    from rest_framework.test import APIClient

    strict = APIClient(enforce_csrf_checks=True)  # as a real client: no CSRF token, no cookie
    for method in ("get", "post", "patch", "delete"):
        response = getattr(strict, method)("/api/v1/artworks/not-a-number/", **auth(write_key))
        assert_error(response, 404, "not_found")


def test_odd_paths_still_get_the_json_404(api):
    assert_error(api.get("/api/v1/iconclass/a%0Ab/"), 404, "not_found")
    assert_error(api.get("/api/v1/x%0A"), 404, "not_found")


def test_a_forged_forwarded_for_does_not_reset_the_anonymous_count(api, settings):
    settings.SEMART_API = {**settings.SEMART_API, "anon_rate": "2/minute"}
    for i in range(2):
        assert api.get("/api/v1/artworks/", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}").status_code == 200
    assert_error(api.get("/api/v1/artworks/", HTTP_X_FORWARDED_FOR="10.0.0.99"), 429, "throttled")

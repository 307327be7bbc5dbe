"""Access and hardening beyond what tests/collections_app/test_admin.py (roles) and
tests/search_app/api/test_keys.py, test_access.py (hashed, scoped keys; rate limits) already cover:
security headers with a Content-Security-Policy the pages really satisfy, CSRF on every form, the
production settings (HSTS behind TLS, secure cookies, secrets only from the environment, `check --deploy`
clean), and uploads kept outside the code tree and served only as what they are."""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile
from django.test import AsyncClient, Client

from tests.factories import ArtworkFactory

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_ENV = {
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
    "DJANGO_ALLOWED_HOSTS": "semart.example.org",
}
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/(?:ld\+)?json\")[^>]*>", re.I)
EVENT_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)


def _production(monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    """semart_site.settings.production as a deployment with ``env`` would load it."""
    for name in PRODUCTION_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    sys.modules.pop("semart_site.settings.production", None)
    try:
        return importlib.import_module("semart_site.settings.production")
    finally:
        sys.modules.pop("semart_site.settings.production", None)


@pytest.fixture
def production_security(settings, monkeypatch):  # type: ignore[no-untyped-def]
    """The test site with the production module's security settings (hosts stay the test client's)."""
    module = _production(monkeypatch, **PRODUCTION_ENV)
    for name in dir(module):
        if name.startswith(("SECURE_", "SESSION_COOKIE_", "CSRF_COOKIE_")) or name == "X_FRAME_OPTIONS":
            setattr(settings, name, getattr(module, name))
    return module


# --- headers -------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/", "/artworks/{pk}/", "/api/v1/artworks/", "/admin/login/", "/nowhere/"])
def test_every_response_carries_the_security_headers(client: Client, url: str) -> None:
    artwork = ArtworkFactory()
    response = client.get(url.format(pk=artwork.pk))
    csp = response["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'"  # no inline or eval'd script, no other origin
    assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
    assert "'unsafe-inline'" not in directives["style-src"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "camera=()" in response["Permissions-Policy"]


@pytest.mark.django_db
def test_the_headers_and_static_files_are_served_on_the_event_loop_too(settings) -> None:  # type: ignore[no-untyped-def]
    """Under ASGI (uvicorn) the middleware runs as coroutines; the project's own two are async-capable so
    that the request stays on the event loop. Same headers, and WhiteNoise still serves static files."""
    settings.WHITENOISE_USE_FINDERS = True  # read when the client's handler builds its middleware
    client = AsyncClient()

    for url in ("/", "/api/v1/artworks/"):
        response = asyncio.run(client.get(url))
        assert "script-src 'self'" in response["Content-Security-Policy"]
        assert "camera=()" in response["Permissions-Policy"]
        assert response["X-Frame-Options"] == "DENY"
    static = asyncio.run(client.get("/static/semart/css/site.css"))
    assert static.status_code == 200 and b"".join(static.streaming_content).startswith(b"/* Semart")
    assert static["Content-Security-Policy"]


def test_no_middleware_is_adapted_between_the_event_loop_and_a_thread(settings, caplog) -> None:  # type: ignore[no-untyped-def]
    """With DEBUG, Django logs each sync-only middleware it wraps for ASGI (a thread hop and back for every
    request, and every middleware outside it made synchronous)."""
    from django.core.handlers.asgi import ASGIHandler

    settings.DEBUG = True
    with caplog.at_level(logging.DEBUG, logger="django.request"):
        ASGIHandler()
    assert [r.getMessage() for r in caplog.records if "adapted" in r.getMessage()] == []


@pytest.mark.django_db
def test_the_api_docs_pages_work_under_their_policy(client: Client) -> None:
    for url in ("/api/v1/docs/", "/api/v1/redoc/"):
        response = client.get(url)
        assert response.status_code == 200
        assert not INLINE_SCRIPT.search(response.text), f"{url} has an inline script its CSP would block"
        assert (
            "'unsafe-inline'" not in response["Content-Security-Policy"].split("script-src")[1].split(";")[0]
        )
    script = client.get("/api/v1/docs/?script=")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.text


def test_no_template_has_an_inline_script_or_event_handler() -> None:
    """The CSP allows scripts from files only: a template that inlines one would break under it."""
    folders = [ROOT / "templates", *ROOT.glob("*_app/templates")]
    offenders = []
    for template in (p for folder in folders for p in folder.rglob("*.html")):
        text = template.read_text()
        if INLINE_SCRIPT.search(text) or EVENT_HANDLER.search(text):
            offenders.append(str(template.relative_to(ROOT)))
    assert offenders == []


def test_every_post_form_carries_a_csrf_token() -> None:
    folders = [ROOT / "templates", *ROOT.glob("*_app/templates")]
    missing = []
    for template in (p for folder in folders for p in folder.rglob("*.html")):
        for form in re.finditer(
            r"<form[^>]*method=\"post\"[^>]*>(.*?)</form>", template.read_text(), re.I | re.S
        ):
            if "{% csrf_token %}" not in form.group(1):
                missing.append(str(template.relative_to(ROOT)))
    assert missing == []


@pytest.mark.django_db
def test_a_post_without_the_csrf_token_is_refused(admin_user) -> None:  # type: ignore[no-untyped-def]
    browser = Client(enforce_csrf_checks=True)
    refused = browser.post("/admin/login/", {"username": admin_user.username, "password": "password"})
    assert refused.status_code == 403
    browser.get("/admin/login/")
    token = browser.cookies["csrftoken"].value
    accepted = browser.post(
        "/admin/login/",
        {"username": admin_user.username, "password": "password", "csrfmiddlewaretoken": token},
    )
    assert accepted.status_code == 302


# --- production settings ---------------------------------------------------------------------------------


def test_production_refuses_to_start_without_its_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImproperlyConfigured, match="DJANGO_SECRET_KEY"):
        _production(monkeypatch, DJANGO_ALLOWED_HOSTS="semart.example.org")
    with pytest.raises(ImproperlyConfigured, match="DJANGO_SECRET_KEY"):
        _production(monkeypatch, DJANGO_SECRET_KEY="too-short", DJANGO_ALLOWED_HOSTS="semart.example.org")
    with pytest.raises(ImproperlyConfigured, match="DJANGO_ALLOWED_HOSTS"):
        _production(monkeypatch, DJANGO_SECRET_KEY=PRODUCTION_ENV["DJANGO_SECRET_KEY"])
    module = _production(monkeypatch, **PRODUCTION_ENV)
    assert PRODUCTION_ENV["DJANGO_SECRET_KEY"] == module.SECRET_KEY and module.DEBUG is False
    assert module.ALLOWED_HOSTS == ["semart.example.org"]


def test_no_secret_is_written_in_the_shared_or_production_settings() -> None:
    for name in ("base.py", "production.py"):
        source = (ROOT / "semart_site" / "settings" / name).read_text()
        assert not re.search(r"SECRET_KEY\s*=\s*[\"']", source), name
        assert not re.search(r"PASSWORD\"?\s*[:=]\s*[\"'][^\"']+[\"']", source), name


@pytest.mark.django_db
def test_behind_tls_hsts_is_sent_and_plain_http_is_redirected(production_security, client: Client) -> None:  # type: ignore[no-untyped-def]
    plain = client.get("/")
    assert plain.status_code == 301 and plain["Location"].startswith("https://")
    assert "Strict-Transport-Security" not in plain
    # TLS ends at the proxy, which says so in X-Forwarded-Proto.
    secure = client.get("/", HTTP_X_FORWARDED_PROTO="https")
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"


@pytest.mark.django_db
def test_production_cookies_are_secure_and_out_of_scripts_reach(production_security, admin_user) -> None:  # type: ignore[no-untyped-def]
    browser = Client(enforce_csrf_checks=True)
    browser.get("/admin/login/", secure=True)
    csrf = browser.cookies["csrftoken"]
    assert csrf["secure"] and csrf["httponly"] and csrf["samesite"] == "Lax"
    browser.post(
        "/admin/login/",
        {"username": admin_user.username, "password": "password", "csrfmiddlewaretoken": csrf.value},
        secure=True,
        HTTP_REFERER="https://testserver/admin/login/",  # HTTPS: Django checks the referer too
    )
    session = browser.cookies["sessionid"]
    assert session["secure"] and session["httponly"] and session["samesite"] == "Lax"


def test_check_deploy_is_clean_with_the_production_settings(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in __import__("os").environ.items() if not k.startswith("DJANGO_")},
        **PRODUCTION_ENV,
        "DJANGO_SETTINGS_MODULE": "semart_site.settings.production",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout


# --- uploads --------------------------------------------------------------------------------------------


def test_uploads_live_in_the_data_folder_outside_the_code() -> None:
    from semart_site.settings import base

    media = Path(base.MEDIA_ROOT).resolve()
    assert media.is_relative_to(Path(base.SEMART_DATA_DIR).resolve())
    code = [ROOT / p for p in ("semart_site", "collections_app", "search_app", "workers", "templates")]
    assert not any(media.is_relative_to(folder) for folder in code)
    ignored = subprocess.run(["git", "check-ignore", "-q", str(media)], cwd=ROOT, check=False)
    assert ignored.returncode == 0 or not media.is_relative_to(ROOT), (
        "media inside the repository, not ignored"
    )


@pytest.mark.django_db
def test_stored_files_are_served_only_as_the_images_they_are(client: Client, art_dev: Path) -> None:
    artwork = ArtworkFactory()
    picture = sorted((art_dev / "images").glob("*.jpg"))[0].read_bytes()
    artwork.image.save("picture.jpg", ContentFile(picture), save=True)
    served = client.get(artwork.image.url)
    assert served.status_code == 200 and served["Content-Type"] == "image/jpeg"
    assert served["X-Content-Type-Options"] == "nosniff"
    assert served["Content-Security-Policy"].startswith("default-src 'none'")
    assert b"".join(served.streaming_content) == picture  # type: ignore[attr-defined]
    # Whatever else lands in storage (an SVG, an HTML page under an image name) is never served inline.
    media = Path(django_settings.MEDIA_ROOT)
    (media / "artworks" / "drawing.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'
    )
    (media / "artworks" / "page.png").write_text("<html><script>alert(1)</script></html>")
    for name in ("drawing.svg", "page.png"):
        assert client.get(f"/media/artworks/{name}").status_code == 404

"""The Content-Security-Policy against the real pages in a real browser (Chromium via Playwright, uvicorn):
the search page with outlined regions, the artwork page with its detail boxes, the catalogers' change form,
and the API's Swagger UI and Redoc run without a single CSP violation. Skips where Chromium is missing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from collections_app.models import Artwork, Detail, DetailLevel
from collections_app.services import ArtworkData, artwork_upsert
from tests.search_app import test_browser

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The browser tests' fixtures: uvicorn on the test database, and Chromium (skips when it is missing).
live_asgi = test_browser.live_asgi
browser_page = test_browser.browser_page


@pytest.fixture
def outlined(art_dev: Path) -> Artwork:
    image = sorted((art_dev / "images").glob("*.jpg"))[5]
    artwork = artwork_upsert(
        data=ArtworkData(source="csp-test", source_id="CSP-1", title="A saint with a golden halo"),
        image_bytes=image.read_bytes(),
        image_name=image.name,
        queue_processing=False,
    ).artwork
    Detail.objects.create(
        artwork=artwork,
        level=DetailLevel.ENTITY,
        x=0.3,
        y=0.1,
        w=0.3,
        h=0.25,
        label="golden halo",
        caption="a golden halo",
        confidence=0.9,
        model_key="csp-test",
    )
    return artwork


@pytest.fixture
def csp_violations(browser_page) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    found: list[str] = []
    browser_page.on(
        "console",
        lambda message: found.append(message.text) if "Content Security Policy" in message.text else None,
    )
    yield found


def test_the_pages_run_under_the_policy(  # type: ignore[no-untyped-def]
    outlined: Artwork,
    admin_user,
    live_asgi: str,
    browser_page,
    csp_violations: list[str],
) -> None:
    # The rows first: Playwright's sync API runs an event loop, inside which Django refuses database calls.
    page = browser_page
    page.goto(f"{live_asgi}/?q=golden+halo")
    test_browser._wait_for_cards(page, 1)
    page.goto(f"{live_asgi}/artworks/{outlined.pk}/")
    page.locator(".box").first.wait_for(state="attached")
    page.goto(f"{live_asgi}/admin/login/")
    page.fill("#id_username", admin_user.username)
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.goto(f"{live_asgi}/admin/collections_app/artwork/{outlined.pk}/change/")
    page.locator("input[name=title]").wait_for()
    page.goto(f"{live_asgi}/api/v1/docs/")
    page.get_by_text("/api/v1/search/").first.wait_for()
    page.goto(f"{live_asgi}/api/v1/redoc/")
    page.get_by_text("Semart API").first.wait_for()
    assert page.js_errors == []
    # Redoc's template asks for Google Fonts; the policy keeps visitors' browsers off third parties.
    assert [v for v in csp_violations if "fonts.googleapis.com" not in v] == []

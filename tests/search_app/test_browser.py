"""The visitors' pages in a real browser: Debian's Chromium driven by Playwright, against the real ASGI app
served by uvicorn, the test database and Redis.

No worker runs here: the pipeline's query encoder and reranker (rerank queue) never answer, so with short
timeouts the search degrades to its text and ICONCLASS legs, which find the halos by their labels. The test
is about the pages (typing, aborting, scrolling, outlines, the artwork page), not about ranking quality.

Chromium comes from scripts/install-browser.sh (run by scripts/test.sh); without it these tests skip.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collections_app.models import Artwork, Detail, DetailLevel, Placement
from collections_app.services import ArtworkData, artwork_upsert

CHROMIUM = Path(os.environ.get("SEMART_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(os.environ.get("SEMART_SCREENSHOT_DIR", "/tmp"))
N_ARTWORKS = 30  # more than one page of 24, so scrolling has something to load

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _chromium_or_skip() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run scripts/install-browser.sh as root (scripts/test.sh does)")
    pytest.importorskip("playwright.sync_api", reason="the [test] extra (playwright) is not installed")


def _haloed_icons(art_dev: Path, n: int) -> list[dict]:  # type: ignore[type-arg]
    """Real icons from art-dev with a labelled halo ("aura") box, in file order."""
    found = []
    with (art_dev / "metadata.jsonl").open() as lines:
        for line in lines:
            row = json.loads(line)
            auras = [b for b in row.get("boxes") or [] if b["label"] == "aura"]
            if auras:
                found.append({**row, "aura": auras[0]["bbox_rel"]})
            if len(found) == n:
                return found
    raise AssertionError(f"art-dev has fewer than {n} images with a halo box")


def _wait_for_cards(page, count: int, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Polls from Python: the site's CSP (script-src 'self') forbids the eval behind wait_for_function."""
    import time

    deadline = time.monotonic() + timeout_s
    while page.locator("#results .card").count() < count:
        assert time.monotonic() < deadline, f"fewer than {count} cards after {timeout_s} s"
        page.wait_for_timeout(100)


@pytest.fixture
def haloed_collection(art_dev: Path) -> list[Artwork]:
    """Artworks with real pictures; each has its labelled halo as an entity detail and the whole picture
    as a scene (what the vision pipeline would store, here taken from art-dev's boxes)."""
    artworks = []
    for n, row in enumerate(_haloed_icons(art_dev, N_ARTWORKS)):
        image = art_dev / "images" / f"{row['id']}.jpg"
        artwork = artwork_upsert(
            data=ArtworkData(
                source="browser-test", source_id=row["id"], title=f"Icon of a saint, no. {n + 1}"
            ),
            image_bytes=image.read_bytes(),
            image_name=image.name,
            queue_processing=False,
        ).artwork
        x, y, w, h = row["aura"]
        Detail.objects.create(
            artwork=artwork,
            level=DetailLevel.ENTITY,
            x=x,
            y=y,
            w=min(w, 1 - x),
            h=min(h, 1 - y),
            label="golden halo",
            caption="a golden halo around the saint's head",
            confidence=0.9,
            model_key="art-dev-boxes",
        )
        Placement.objects.create(
            artwork=artwork, label="golden halo", x=x, y=y, w=min(w, 1 - x), h=min(h, 1 - y)
        )
        Detail.objects.create(
            artwork=artwork,
            level=DetailLevel.SCENE,
            x=0,
            y=0,
            w=1,
            h=1,
            label="icon",
            caption="a painted icon of a saint",
            confidence=0.5,
            model_key="art-dev-boxes",
        )
        artworks.append(artwork)
    return artworks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live_asgi(settings) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The site's real ASGI application under uvicorn on a free local port, in a thread of this process
    (so it uses the test database). Static files come straight from the source folders."""
    import uvicorn
    from django.core.asgi import get_asgi_application

    settings.WHITENOISE_USE_FINDERS = True
    # No worker answers the encode and rerank steps here: degrade quickly instead of after 10 s.
    settings.SEARCH = {**settings.SEARCH, "encode_timeout_s": 0.3, "rerank_timeout_s": 0.3}
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            get_asgi_application(), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser_page() -> Iterator:  # type: ignore[type-arg]
    _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.js_errors = errors  # type: ignore[attr-defined]
        yield page
        context.close()
        browser.close()


def test_search_scroll_and_open_the_matched_region(
    haloed_collection: list[Artwork],
    redis_client,
    live_asgi: str,
    browser_page,  # type: ignore[no-untyped-def]
) -> None:
    # Read before the browser starts: Playwright's event loop makes this thread "async" to Django.
    expected_ids = sorted(str(a.pk) for a in haloed_collection)
    page = browser_page
    aborted: list[str] = []
    page.on("requestfailed", lambda request: aborted.append(request.url))

    page.goto(live_asgi + "/")
    assert page.locator("#results-heading").inner_text() == "Recently added"

    # A first query superseded at once by a second: the browser aborts the first request.
    page.fill("#id_q", "saint")
    page.press("#id_q", "Enter")
    page.fill("#id_q", "golden halo")
    page.check("#level-details", force=True)  # changing level re-submits the current query
    page.wait_for_url(re.compile(r"q=golden\+halo&level=details"))
    cards = page.locator('#results .card[data-artwork-id]:not([data-artwork-id=""])')
    _wait_for_cards(page, 24)
    assert any("q=saint" in url for url in aborted), aborted
    assert page.locator("#results-heading").inner_text().startswith("Results for")
    assert cards.count() == 24
    first_region = cards.first.locator(".card__region")
    assert first_region.is_visible()
    assert "Matching figure or object: golden halo" in (first_region.get_attribute("aria-label") or "")

    page.screenshot(path=str(SCREENSHOTS / "semart-search.png"), full_page=False)

    # Scrolling to the end loads the rest from /search.json, with outlines drawn by the script.
    page.locator("[data-more]").scroll_into_view_if_needed()
    _wait_for_cards(page, N_ARTWORKS)
    assert cards.count() == N_ARTWORKS
    assert cards.nth(N_ARTWORKS - 1).locator(".card__region").is_visible()
    ids = [cards.nth(i).get_attribute("data-artwork-id") for i in range(N_ARTWORKS)]
    assert sorted(ids) == expected_ids  # every halo found, once
    page.wait_for_selector(".results__end")

    # The shared URL reproduces the page without the script's help.
    assert "level=details" in page.url and "q=golden+halo" in page.url

    # Open the first result: the artwork page outlines the matched halo.
    page.locator("#results .card__link").first.scroll_into_view_if_needed()
    page.locator("#results .card__link").first.click()
    page.wait_for_url(re.compile(r"/artworks/\d+/\?detail=\d+"))
    match = page.locator(".box--match")
    assert match.count() == 1 and match.is_visible()
    detail_id = re.search(r"detail=(\d+)", page.url).group(1)  # type: ignore[union-attr]
    assert match.get_attribute("data-detail-id") == detail_id
    assert "golden halo" in (match.get_attribute("aria-label") or "")
    box = match.bounding_box()
    image = page.locator(".viewer__image").bounding_box()
    assert box and image and box["width"] < image["width"] and box["height"] < image["height"]
    # Keyboard: focusing the box shows its caption.
    match.focus()
    assert page.locator(".box--match .box__caption").is_visible()
    page.screenshot(path=str(SCREENSHOTS / "semart-artwork.png"), full_page=True)

    # An artworks search shows where the halo is placed: a placement has no detail of its own, so the
    # cards the script adds on scrolling link with its box alone.
    page.goto(live_asgi + "/?q=golden+halo")
    _wait_for_cards(page, 24)
    page.locator("[data-more]").scroll_into_view_if_needed()
    _wait_for_cards(page, N_ARTWORKS)
    last = cards.nth(N_ARTWORKS - 1)
    href = last.locator(".card__link").get_attribute("href") or ""
    assert "box=" in href and "detail=" not in href, href
    assert last.locator(".card__region").is_visible()
    assert page.js_errors == []  # type: ignore[attr-defined]

"""The visitors' pages: the search page and the artwork page, server-rendered.

The search page is an async view: under ASGI a visitor who leaves, or who starts another search, cancels the
awaiting view, and the pipeline stops the rerank that was working for it (issue 5, "cancellation follows the
request"). Everything a template needs is built into plain data first, so rendering never queries the
database from the event loop.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from collections_app.iconography import subject
from collections_app.models import Artwork, DetailLevel
from collections_app.selectors import artwork_details, artwork_get, artwork_list_recent
from search_app.cards import LEVEL_NAMES, LEVEL_PLURALS, Card, Region, card_from_artwork, card_from_hit
from search_app.forms import FILTER_FIELDS, LEVEL_CHOICES, PictureSearchForm, SearchForm
from search_app.media import artwork_large_url
from search_app.types import SearchResponse

logger = logging.getLogger(__name__)

# One random id per browser, so a visitor's new search supersedes (and cancels) their previous one without
# needing a session row per visitor.
CLIENT_COOKIE = "semart_client"
_CLIENT_ID = re.compile(r"[0-9a-f]{32}")


def client_id(request: HttpRequest) -> str:
    value = request.COOKIES.get(CLIENT_COOKIE, "")
    return value if _CLIENT_ID.fullmatch(value) else ""


def search_request_key(request: HttpRequest, new_client_id: str = "") -> str:
    """The pipeline's request key for this visitor's searches (shared by the page and /search.json)."""
    return f"visitor:{client_id(request) or new_client_id}"


def _remember_client(request: HttpRequest, response: HttpResponse, new_client_id: str) -> HttpResponse:
    if not client_id(request):
        response.set_cookie(
            CLIENT_COOKIE,
            new_client_id,
            max_age=365 * 24 * 3600,
            httponly=True,
            samesite="Lax",
            secure=request.is_secure(),
        )
    return response


@dataclass(frozen=True)
class Suggestion:
    text: str
    url: str


def _url(params: dict[str, str]) -> str:
    home = reverse("search:home")
    return f"{home}?{urlencode(params)}" if params else home


def _suggestions(form: SearchForm, text: str, exclude: tuple[str, ...]) -> list[Suggestion]:
    """Ways out of an empty result, each a link that changes one thing."""
    data = form.cleaned_data
    found: list[Suggestion] = []
    if any(data.get(name) not in (None, "") for name in FILTER_FIELDS):
        found.append(
            Suggestion(
                "Search again without the filters",
                _url(form.shareable_params(**dict.fromkeys(FILTER_FIELDS))),
            )
        )
    if exclude and text:
        found.append(
            Suggestion(f"Search without excluding {', '.join(exclude)}", _url(form.shareable_params(q=text)))
        )
    if data["level"] == "artworks" and text:
        found.append(
            Suggestion("Look inside the pictures (details)", _url(form.shareable_params(level="details")))
        )
    elif data["level"] != "artworks":
        found.append(
            Suggestion("Search whole artworks instead", _url(form.shareable_params(level="artworks")))
        )
    return found


def _form_context(form: SearchForm) -> dict[str, Any]:
    """What the form's template needs beyond the fields: the level radios and the filters' state."""
    level = form.cleaned_data.get("level") if form.is_valid() else form.data.get("level")
    if level not in dict(LEVEL_CHOICES):
        level = "artworks"
    active = sum(1 for name in FILTER_FIELDS if form.data.get(name, "").strip()) if form.is_bound else 0
    return {
        "level_choices": LEVEL_CHOICES,
        "current_level": level,
        "current_level_label": dict(LEVEL_CHOICES)[level],
        "filter_fields": [form[name] for name in FILTER_FIELDS],
        "active_filters": active,
        "filter_errors": any(form.errors.get(name) for name in FILTER_FIELDS),
        "clear_filters_url": _url(form.shareable_params(**dict.fromkeys(FILTER_FIELDS))),
    }


async def search_page(request: HttpRequest) -> HttpResponse:
    form = SearchForm(request.GET)
    new_client = "" if client_id(request) else secrets.token_hex(16)
    context: dict[str, Any] = {"form": form, "cards": [], "state": "recent"}
    status = 200
    valid = form.is_valid()
    context.update(_form_context(form))
    if not valid:
        context["state"], status = "invalid", 400
    elif not form.has_request():
        artworks = await sync_to_async(artwork_list_recent)(limit=settings.SEARCH["page_size"])
        context["cards"] = [card_from_artwork(a) for a in artworks]
    else:
        outcome, status = await _run_search(
            request, form, request_key=search_request_key(request, new_client)
        )
        context.update(outcome)
    context["json_params"] = urlencode(form.shareable_params())
    response = render(request, "search_app/search.html", context, status=status)
    return _remember_client(request, response, new_client)


async def _run_search(
    request: HttpRequest, form: SearchForm, *, request_key: str
) -> tuple[dict[str, Any], int]:
    # Imported here so the catalogue's pages (and admin) never depend on the search machinery loading.
    from search_app.pipeline import QueryError, parse_query_text, search

    like_title = ""
    if form.cleaned_data.get("image"):
        like_title = "your picture"
    if form.cleaned_data.get("like_artwork"):
        found = await sync_to_async(_like_title)(form.cleaned_data["like_artwork"])
        if found is None:
            form.add_error(
                "like_artwork",
                "That artwork is not in the collection (any more), so there is nothing to compare with.",
            )
            return {"state": "invalid"}, 404
        like_title = found
    text, exclude = parse_query_text(form.cleaned_data["q"])
    query = form.to_query(text=text, exclude=exclude)
    try:
        response: SearchResponse = await search(query, request_key=request_key)
    except QueryError as error:  # e.g. a query that is only exclusions: nothing left to look for
        form.add_error("q", str(error))
        return {"state": "invalid"}, 400
    except Exception:  # a broken index or database must read as "try again", never as a 500 page
        logger.exception("search failed for %r", query)
        return {"state": "error"}, 503
    return _results_context(form, response, text, exclude, like_title), 200


@require_POST
def search_by_picture(request: HttpRequest) -> HttpResponse:
    """Takes an uploaded picture, keeps a small copy for a day, and sends the visitor to the shareable
    search URL that names it. A file that is not a readable picture comes back with the reason."""
    from search_app.query_encoding import stash_query_image
    from workers.imaging import ImageRejected

    picture_form = PictureSearchForm(request.POST, request.FILES)
    errors: list[str] = []
    if picture_form.is_valid():
        try:
            digest = stash_query_image(picture_form.cleaned_data["picture"].read())
        except ImageRejected as error:
            errors.append(f"That file cannot be searched by: {error}.")
        else:
            params = {"image": digest}
            level = picture_form.cleaned_data.get("level")
            if level and level != "artworks":
                params["level"] = level
            return HttpResponseRedirect(_url(params), status=303)
    else:
        errors = [str(e) for field_errors in picture_form.errors.values() for e in field_errors]
    form = SearchForm({})
    form.is_valid()
    context: dict[str, Any] = {"form": form, "cards": [], "state": "invalid", "picture_errors": errors}
    context.update(_form_context(form))
    return render(request, "search_app/search.html", context, status=400)


def _like_title(artwork_id: int) -> str | None:
    try:
        artwork = artwork_get(pk=artwork_id)
    except Artwork.DoesNotExist:
        return None
    return str(artwork)


def _results_context(
    form: SearchForm, response: SearchResponse, text: str, exclude: tuple[str, ...], like_title: str
) -> dict[str, Any]:
    cards: list[Card] = [card_from_hit(hit, query_text=form.cleaned_data["q"]) for hit in response.hits]
    offset = response.query.offset
    next_url = ""
    if response.has_more:
        next_url = _url({**form.shareable_params(), "offset": str(offset + len(response.hits))})
    return {
        "state": "results" if cards else "empty",
        "cards": cards,
        "offset": offset,
        "next_offset": offset + len(response.hits),
        "next_url": next_url,
        "has_more": response.has_more,
        "degraded": response.degraded,
        "query_text": text,
        "excluded": exclude,
        "like_title": like_title,
        "suggestions": [] if cards else _suggestions(form, text, exclude),
        "first_page_url": _url(form.shareable_params()) if offset else "",
    }


# -- the artwork page ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetailBox:
    id: int
    level: str
    level_name: str
    label: str
    caption: str
    region: Region
    angle: float
    is_match: bool

    @property
    def name(self) -> str:
        """The box's accessible name: what it is, then what it shows."""
        words = f"{self.level_name.capitalize()}: {self.label or 'unlabelled'}"
        return f"{words}. {self.caption}" if self.caption else words


def _parse_box(raw: str) -> Region | None:
    """?box=x,y,w,h (relative, as search results link it) or None when it is not a box inside the picture."""
    parts = raw.split(",")
    if len(parts) != 4 or len(raw) > 100:
        return None
    try:
        x, y, w, h = (float(p) for p in parts)
    except ValueError:
        return None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return None
    if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 and 0 < h <= 1):
        return None
    return Region.from_box((x, y, w, h))


def _metadata(artwork: Artwork) -> list[tuple[str, str]]:
    rows = [
        ("Artist" if len(artwork.artists.all()) == 1 else "Artists", artwork.artist_names),
        ("Date", artwork.display_date or _years(artwork)),
        ("Medium", artwork.medium),
        ("Dimensions", artwork.dimensions),
        ("Classification", artwork.classification),
        ("Collection", artwork.collection),
        ("Accession number", artwork.accession_number),
        ("Credit", artwork.credit_line),
        ("Licence", artwork.licence),
    ]
    return [(name, value) for name, value in rows if value]


def _years(artwork: Artwork) -> str:
    def year(value: int) -> str:
        return f"{-value} BCE" if value < 0 else str(value)

    begin, end = artwork.date_begin, artwork.date_end
    if begin is None and end is None:
        return ""
    if begin is None or end is None or begin == end:
        return year(begin if begin is not None else end)  # type: ignore[arg-type]
    return f"{year(begin)}–{year(end)}"


def _safe_link(url: str) -> str:
    # Catalogue URLs come from imports; only web links become clickable.
    return url if url.lower().startswith(("https://", "http://")) else ""


@require_safe
def artwork_page(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        artwork = artwork_get(pk=pk)
    except Artwork.DoesNotExist:
        raise Http404("No artwork with this number.") from None

    wanted_detail = request.GET.get("detail", "")
    details = list(artwork_details(artwork=artwork))  # visible only: hidden details never reach visitors
    boxes = [
        DetailBox(
            id=d.pk,
            level=d.level,
            level_name=LEVEL_NAMES.get(d.level, d.level),
            label=d.label,
            caption=d.caption,
            region=Region.from_box(d.box),
            angle=d.angle,
            is_match=str(d.pk) == wanted_detail,
        )
        for d in details
    ]
    matched = next((b for b in boxes if b.is_match), None)
    raw_box = request.GET.get("box", "")
    # A link to a detail a cataloger has since hidden must not outline it through its box either.
    hidden_match = (
        bool(wanted_detail)
        and not matched
        and any(str(d.pk) == wanted_detail for d in artwork_details(artwork=artwork, include_hidden=True))
    )
    matched_region = None if matched or hidden_match or not raw_box else _parse_box(raw_box)
    counts = {level: sum(1 for b in boxes if b.level == level) for level in DetailLevel.values}
    # Scenes often cover most of the picture: by default show the finest level that exists, plus the match's.
    default_level = next((lvl for lvl in DetailLevel.values if counts[lvl]), "")
    shown = {default_level, matched.level if matched else ""} - {""}
    query_text = " ".join(request.GET.get("q", "").split())[:500]

    subjects = [s for s in (subject(n) for n in artwork.iconclass) if s is not None]
    context = {
        "artwork": artwork,
        "image_url": artwork_large_url(artwork),
        "boxes": boxes,
        "levels": [
            {"value": level, "name": LEVEL_PLURALS[level], "count": counts[level], "shown": level in shown}
            for level in DetailLevel.values
            if counts[level]
        ],
        "matched": matched,
        "matched_region": matched_region,
        "bad_box": bool(raw_box) and not matched and not hidden_match and matched_region is None,
        "metadata": _metadata(artwork),
        "source_link": _safe_link(artwork.source_url),
        "subjects": subjects,
        "query_text": query_text,
        "back_url": _url({"q": query_text}) if query_text else "",
        "more_like_url": _url({"like_artwork": str(artwork.pk)}),
    }
    return render(request, "search_app/artwork.html", context)

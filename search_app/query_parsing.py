"""From what a visitor typed (or a URL's parameters) to a SearchQuery.

Exclusions are taken out of the text before it is encoded: an embedding of "red painting but no blue" is
close to blue paintings, which is the opposite of what was asked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from django.conf import settings

from search_app.types import LEVELS, SearchFilters, SearchQuery

# "-blue", -"blue sky"
_MINUS = re.compile(r'(?:(?<=\s)|^)-(?:"([^"]+)"|([^\s"-][^\s"]*))')
# "but no blue", "and not red", "with no halo", "without a halo", "except the sky", "excluding gold"
_NEGATION = re.compile(
    r"(?:,\s*|\s+|^)(?:(?:but|and|with)\s+(?:no|not)|without|except|excluding)\s+"
    r"(?P<phrase>.+?)(?=\s*(?:[,;.]|\band\b|\bbut\b|\bwith\b|$))",
    re.IGNORECASE,
)
_ARTICLE = re.compile(r"^(?:a|an|the|any)\s+", re.IGNORECASE)
# A dash standing alone, as catalogue titles are written ("A Lady Reading - Art Institute of Chicago"):
# punctuation, not "-word". PostgreSQL's websearch syntax, which the word legs read, would take it as
# excluding the next word, so a pasted title missed its own artwork.
_LONE_DASH = re.compile(r"(?:(?<=\s)|^)-+(?=\s|$)")


class QueryError(ValueError):
    """The request cannot be turned into a search; the message says what to fix."""


def parse_query_text(raw: str) -> tuple[str, tuple[str, ...]]:
    """Split free text into what to look for and what to push down.

    >>> parse_query_text("red painting but no blue")
    ('red painting', ('blue',))
    """
    text = " ".join((raw or "").split())
    exclusions: list[str] = []

    def take_minus(match: re.Match[str]) -> str:
        exclusions.append(match.group(1) or match.group(2))
        return " "

    text = _MINUS.sub(take_minus, text)

    def take_negation(match: re.Match[str]) -> str:
        exclusions.append(match.group("phrase"))
        return " "

    text = _NEGATION.sub(take_negation, text)
    text = _LONE_DASH.sub(" ", text)
    cleaned: list[str] = []
    for phrase in exclusions:
        phrase = _ARTICLE.sub("", phrase.strip(" \"'")).strip()
        if phrase and phrase.lower() not in (p.lower() for p in cleaned):
            cleaned.append(phrase)
    text = re.sub(r"\s+([,;])", r"\1", " ".join(text.split()))
    return text.strip(" ,;"), tuple(cleaned)


def _int_param(params: Mapping[str, str], name: str) -> int | None:
    value = (params.get(name) or "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise QueryError(f"{name} must be a whole number (a year, or a count), not {value!r}") from None


def _check_text(params: Mapping[str, str]) -> None:
    """The search page's limits on free text, for every other way in (/search.json): a NUL cannot even reach
    PostgreSQL, and a 10,000-character query would only cost an embedding and a full-text plan."""
    from search_app.forms import FILTER_MAX_CHARS, QUERY_MAX_CHARS, control_character

    for name in ("q", "artist", "classification", "medium", "collection", "level"):
        value = params.get(name) or ""
        limit = QUERY_MAX_CHARS if name == "q" else FILTER_MAX_CHARS
        if len(value) > limit:
            raise QueryError(f"{name} is {len(value)} characters long; keep it under {limit}")
        bad = control_character(value)
        if bad:
            raise QueryError(f"{name} contains an invisible control character (U+{ord(bad):04X})")


def query_from_params(params: Mapping[str, str]) -> SearchQuery:
    """A SearchQuery from GET parameters: q, level, artist, year_from, year_to, classification, medium,
    collection, like_artwork, like_detail, image (an uploaded picture's digest), offset, limit. Raises
    QueryError on values it cannot use."""
    _check_text(params)
    text, exclude = parse_query_text(params.get("q", ""))
    level = (params.get("level") or "artworks").strip()
    if level not in LEVELS:
        raise QueryError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    filters = SearchFilters(
        artist=(params.get("artist") or "").strip(),
        year_from=_int_param(params, "year_from"),
        year_to=_int_param(params, "year_to"),
        classification=(params.get("classification") or "").strip(),
        medium=(params.get("medium") or "").strip(),
        collection=(params.get("collection") or "").strip(),
    )
    if filters.year_from is not None and filters.year_to is not None and filters.year_from > filters.year_to:
        raise QueryError("year_from is after year_to")
    like_artwork_id = _int_param(params, "like_artwork")
    like_detail_id = _int_param(params, "like_detail")
    like_image = (params.get("image") or "").strip()
    if like_image and not re.fullmatch(r"[0-9a-f]{64}", like_image):
        raise QueryError("image must be the reference of a picture uploaded here (64 hex digits)")
    if not text and not exclude and like_artwork_id is None and like_detail_id is None and not like_image:
        raise QueryError("type something to look for (or pick an artwork for 'more like this')")
    page_size = int(settings.SEARCH["page_size"])
    limit = _int_param(params, "limit") or page_size
    offset = _int_param(params, "offset") or 0
    if not 1 <= limit <= 100 or offset < 0 or offset > 1000:
        raise QueryError("limit must be 1-100 and offset 0-1000")
    return SearchQuery(
        text=text,
        exclude=exclude,
        level=level,
        filters=filters,
        like_artwork_id=like_artwork_id,
        like_detail_id=like_detail_id,
        like_image=like_image,
        limit=limit,
        offset=offset,
    )

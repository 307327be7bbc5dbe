"""How one artwork appears in the result grid, whether it came from a search or from "recently added".

Cards are plain data built before rendering, so async views render templates without touching the
database, and the script that appends results on scroll fills the same markup (templates/search_app/
_card.html) from /search.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from django.urls import reverse

from collections_app.models import Artwork
from search_app.media import artwork_thumbnail_url
from search_app.types import DetailHit, SearchHit

LEVEL_NAMES = {"entity": "figure or object", "group": "group", "scene": "scene"}
LEVEL_PLURALS = {"entity": "figures and objects", "group": "groups", "scene": "scenes"}


@dataclass(frozen=True)
class Region:
    """A detail's box as CSS percentages of the picture it sits on."""

    left: float
    top: float
    width: float
    height: float

    @classmethod
    def from_box(cls, box: tuple[float, float, float, float]) -> Region:
        x, y, w, h = (min(max(float(v), 0.0), 1.0) for v in box)
        return cls(left=x * 100, top=y * 100, width=min(w, 1 - x) * 100, height=min(h, 1 - y) * 100)

    @property
    def style(self) -> str:
        return f"left:{self.left:.2f}%;top:{self.top:.2f}%;width:{self.width:.2f}%;height:{self.height:.2f}%"


@dataclass(frozen=True)
class Card:
    artwork_id: int
    href: str
    title: str
    artist_names: str
    display_date: str
    thumbnail_url: str
    score: float | None = None
    detail_id: int | None = None
    detail_level: str = ""
    detail_label: str = ""
    region: Region | None = None

    @property
    def detail_description(self) -> str:
        """What the outline on the thumbnail is, in words (its accessible name)."""
        kind = LEVEL_NAMES.get(self.detail_level, "detail")
        return f"Matching {kind}: {self.detail_label}" if self.detail_label else f"Matching {kind}"


def artwork_href(artwork_id: int, *, detail: DetailHit | None = None, query_text: str = "") -> str:
    """The artwork page, carrying the matched region and the query so the page can highlight and link back."""
    params: dict[str, str] = {}
    if detail is not None:
        if detail.id is not None:  # a placement has no detail of its own: the box alone outlines it
            params["detail"] = str(detail.id)
        params["box"] = ",".join(f"{v:.4f}" for v in detail.box)
    if query_text:
        params["q"] = query_text
    url = reverse("search:artwork", kwargs={"pk": artwork_id})
    return f"{url}?{urlencode(params)}" if params else url


def card_from_hit(hit: SearchHit, *, query_text: str = "") -> Card:
    detail = hit.detail
    return Card(
        artwork_id=hit.artwork_id,
        href=artwork_href(hit.artwork_id, detail=detail, query_text=query_text),
        title=hit.title,
        artist_names=hit.artist_names,
        display_date=hit.display_date,
        thumbnail_url=hit.thumbnail_url,
        score=hit.score,
        detail_id=detail.id if detail else None,
        detail_level=detail.level if detail else "",
        detail_label=(detail.label or detail.caption) if detail else "",
        region=Region.from_box(detail.box) if detail else None,
    )


def card_from_artwork(artwork: Artwork) -> Card:
    """A card for an artwork shown without a query. Expects artists prefetched (``with_artists``)."""
    return Card(
        artwork_id=artwork.pk,
        href=artwork_href(artwork.pk),
        title=artwork.title,
        artist_names=artwork.artist_names,
        display_date=artwork.display_date,
        thumbnail_url=artwork_thumbnail_url(artwork),
    )

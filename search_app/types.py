"""The search pipeline's input and output, shared by the pages, the API and the evaluation command."""

from __future__ import annotations

from dataclasses import dataclass, field

LEVELS = ("artworks", "details", "entity", "group", "scene")


@dataclass(frozen=True)
class SearchFilters:
    artist: str = ""
    year_from: int | None = None
    year_to: int | None = None
    classification: str = ""
    medium: str = ""
    collection: str = ""

    def is_empty(self) -> bool:
        return not (self.artist or self.classification or self.medium or self.collection) and (
            self.year_from is None and self.year_to is None
        )


@dataclass(frozen=True)
class SearchQuery:
    text: str = ""
    # "More like this": an uploaded image, or an artwork / detail already in the catalogue.
    image_bytes: bytes | None = None
    like_image: str = ""  # an uploaded picture's digest, once stashed (query_encoding.stash_query_image)
    like_artwork_id: int | None = None
    like_detail_id: int | None = None
    level: str = "artworks"  # one of LEVELS; "details" means every detail level
    filters: SearchFilters = field(default_factory=SearchFilters)
    exclude: tuple[str, ...] = ()  # "-blue", "but no blue": matches are pushed down
    limit: int = 24
    offset: int = 0
    alpha: float | None = None  # None: settings.SEARCH["alpha"]
    threshold: float | None = None  # None: settings.SEARCH["threshold"]
    rerank: bool = True
    depth: int | None = None  # candidates to gather; None: settings.SEARCH["candidates"]
    lexical: bool = True  # the full-text leg (off for ablations)
    iconclass: bool = True  # the ICONCLASS expansion leg (off for ablations)


@dataclass
class DetailHit:
    """The region shown for a hit: a detail, or (``id`` None, ``level`` "placement") where the detector
    places the thing the query names (collections_app.models.Placement)."""

    id: int | None
    level: str
    box: tuple[float, float, float, float]  # x, y, w, h relative to the image
    label: str = ""
    caption: str = ""


@dataclass
class SearchHit:
    artwork_id: int
    source_id: str
    title: str
    artist_names: str
    display_date: str
    thumbnail_url: str
    score: float  # final: alpha * rerank + (1 - alpha) * normalised similarity
    vector_score: float
    rerank_score: float | None = None
    detail: DetailHit | None = None  # the best matching region, when the query matched inside the picture
    legs: dict[str, float] = field(default_factory=dict)  # evidence per leg: vector, lexical, iconclass


@dataclass
class SearchResponse:
    query: SearchQuery
    hits: list[SearchHit]
    has_more: bool = False
    reranked: bool = False
    degraded: str = ""  # why the answer is less than usual (e.g. "rerank unavailable"), empty when not
    timings_ms: dict[str, float] = field(default_factory=dict)

"""What a visitor may ask the search page, validated at the edge.

Every field lives in the query string, so a result page is a shareable URL and the form re-renders exactly
what was asked, with a message next to whatever could not be used.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from search_app.types import LEVELS, SearchFilters, SearchQuery

QUERY_MAX_CHARS = 500
FILTER_MAX_CHARS = 200
# Deep offsets cost the pipeline a deep candidate list; nobody scrolls 40 pages of 24.
OFFSET_MAX = 960
YEAR_MIN, YEAR_MAX = -5000, 2200

LEVEL_CHOICES = [
    ("artworks", "Whole artworks"),
    ("details", "Details inside them"),
    ("entity", "Figures and objects"),
    ("group", "Groups"),
    ("scene", "Scenes"),
]
assert [value for value, _ in LEVEL_CHOICES] == list(LEVELS)

# Fields that narrow the results (kept in every shareable link, dropped by "remove filters").
FILTER_FIELDS = ("artist", "year_from", "year_to", "classification", "medium", "collection")


def control_character(value: str) -> str:
    """The first character of ``value`` a search refuses, or "".

    Tabs and newlines are harmless (they become spaces); anything else in category C is almost always a
    paste accident or a probe, and NUL cannot even be stored by PostgreSQL."""
    for char in value:
        if char not in "\t\n\r" and unicodedata.category(char).startswith("C"):
            return char
    return ""


def _reject_control_characters(value: str) -> None:
    char = control_character(value)
    if char:
        raise ValidationError(
            "This contains an invisible control character (U+%(code)04X). Please retype it.",
            params={"code": ord(char)},
            code="control_character",
        )


class TextField(forms.CharField):
    """A one-line text input: control characters refused, runs of whitespace folded into one space."""

    def __init__(self, *, label: str, max_length: int, **kwargs: Any) -> None:
        super().__init__(label=label, max_length=max_length, required=False, strip=True, **kwargs)
        self.error_messages["max_length"] = (
            "Please keep this under %(limit_value)d characters (it has %(show_value)d)."
        )

    def to_python(self, value: Any) -> str:
        text = super().to_python(value) or ""
        _reject_control_characters(text)
        return " ".join(text.split())


class SearchForm(forms.Form):
    q = TextField(
        label="Search the collection",
        max_length=QUERY_MAX_CHARS,
        widget=forms.TextInput(
            attrs={
                "type": "search",
                "placeholder": "a golden halo, an angel holding a lily, the Annunciation…",
                "autocomplete": "off",
                "spellcheck": "false",
            }
        ),
    )
    level = forms.ChoiceField(
        label="Look at", choices=LEVEL_CHOICES, required=False, widget=forms.RadioSelect
    )
    # The page's "detailed" switch: on without a level means every detail level.
    detailed = forms.BooleanField(label="Search inside the pictures", required=False)
    artist = TextField(label="Artist", max_length=FILTER_MAX_CHARS)
    year_from = forms.IntegerField(label="From year", required=False, min_value=YEAR_MIN, max_value=YEAR_MAX)
    year_to = forms.IntegerField(label="To year", required=False, min_value=YEAR_MIN, max_value=YEAR_MAX)
    classification = TextField(label="Classification", max_length=FILTER_MAX_CHARS)
    medium = TextField(label="Medium", max_length=FILTER_MAX_CHARS)
    collection = TextField(label="Collection", max_length=FILTER_MAX_CHARS)
    like_artwork = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    # An uploaded picture, by the digest search_by_picture stashed it under (see query_encoding).
    image = forms.RegexField(
        regex=r"^[0-9a-f]{64}$",
        required=False,
        widget=forms.HiddenInput,
        error_messages={"invalid": "That is not a picture reference made here. Please upload it again."},
    )
    offset = forms.IntegerField(required=False, min_value=0, max_value=OFFSET_MAX, widget=forms.HiddenInput)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("year_from", "year_to"):
            self.fields[name].widget.attrs.update({"inputmode": "numeric", "placeholder": "year"})
            self.fields[name].error_messages.update(
                {"invalid": "Please give a year as a whole number, like 1490 (or -300 for 300 BCE)."}
            )
        self.fields["level"].error_messages["invalid_choice"] = (
            "Choose whole artworks, details, figures and objects, groups or scenes."
        )

    def clean_level(self) -> str:
        return self.cleaned_data.get("level") or "artworks"

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        year_from, year_to = data.get("year_from"), data.get("year_to")
        if year_from is not None and year_to is not None and year_from > year_to:
            self.add_error("year_to", "The end year comes before the start year.")
        if data.get("detailed") and data.get("level") == "artworks":
            data["level"] = "details"
        data["detailed"] = data.get("level", "artworks") != "artworks"
        return data

    # -- reading the validated form -------------------------------------------------------------------

    def has_request(self) -> bool:
        """True when the visitor asked for something (text or "more like this"), not just opened the page."""
        data = self.cleaned_data
        return bool(data.get("q") or data.get("like_artwork") or data.get("image"))

    def filters(self) -> SearchFilters:
        data = self.cleaned_data
        return SearchFilters(
            artist=data.get("artist", ""),
            year_from=data.get("year_from"),
            year_to=data.get("year_to"),
            classification=data.get("classification", ""),
            medium=data.get("medium", ""),
            collection=data.get("collection", ""),
        )

    def to_query(self, *, text: str, exclude: tuple[str, ...]) -> SearchQuery:
        """The pipeline's query. ``text`` and ``exclude`` come from the pipeline's own parser ("-blue")."""
        data = self.cleaned_data
        return SearchQuery(
            text=text,
            like_artwork_id=data.get("like_artwork"),
            like_image=data.get("image") or "",
            level=data["level"],
            filters=self.filters(),
            exclude=exclude,
            limit=settings.SEARCH["page_size"],
            offset=data.get("offset") or 0,
        )

    def shareable_params(self, **changes: Any) -> dict[str, str]:
        """The query string of this search (without the offset), with ``changes`` applied; empty values
        dropped so links stay short. Values are the cleaned ones when valid, else what was typed."""
        if self.is_bound and self.is_valid():
            source: dict[str, Any] = dict(self.cleaned_data)
        else:
            source = {name: self.data.get(name) for name in self.data}
        params: dict[str, str] = {}
        for name in ("q", "level", *FILTER_FIELDS, "like_artwork", "image"):
            value = changes[name] if name in changes else source.get(name)
            if value in (None, "") or (name == "level" and value == "artworks"):
                continue
            params[name] = str(value)
        return params


class PictureSearchForm(forms.Form):
    """Search by a picture the visitor uploads: the file goes in a POST, the search itself then runs from a
    shareable URL naming the stashed picture (``?image=<digest>``)."""

    picture = forms.FileField(label="Search by a picture")
    level = forms.ChoiceField(choices=LEVEL_CHOICES, required=False)

    def clean_picture(self) -> Any:
        picture = self.cleaned_data["picture"]
        limit = settings.SEMART_API["max_upload_bytes"]
        if picture.size > limit:
            raise ValidationError(
                "This picture is %(size)s MB; please send one under %(limit)s MB.",
                params={"size": round(picture.size / 1e6, 1), "limit": round(limit / 1e6)},
                code="too_large",
            )
        return picture

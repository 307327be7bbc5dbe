"""Input and output shapes of the partner API. No business logic: views pass validated data to services."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from collections_app.iconography import subject
from collections_app.models import Artwork, Detail, DetailLevel, Placement, ProcessingStatus, ProcessingStep
from search_app.api.health import HEALTH_STATUSES
from search_app.types import LEVELS


def _absolute(request: Any, url: str) -> str:
    return request.build_absolute_uri(url) if request is not None and url else url


def _file_url(request: Any, field: Any) -> str | None:
    return _absolute(request, field.url) if field else None


# --- ICONCLASS ---------------------------------------------------------------------------------------------


class IconclassSubjectSerializer(serializers.Serializer):
    notation = serializers.CharField()
    text = serializers.CharField()
    keywords = serializers.ListField(child=serializers.CharField())
    path = serializers.ListField(child=serializers.CharField(), help_text="Broader notations, from the root.")


class IconclassSearchSerializer(serializers.Serializer):
    query = serializers.CharField()
    results = IconclassSubjectSerializer(many=True)


class IconclassQuerySerializer(serializers.Serializer):
    q = serializers.CharField(
        max_length=200, help_text="Words that must all occur in a notation's English text."
    )
    limit = serializers.IntegerField(min_value=1, max_value=100, default=20)


def subjects_of(notations: list[str]) -> list[dict[str, Any]]:
    out = []
    for notation in notations:
        s = subject(notation)
        if s is not None:
            out.append(
                {"notation": s.notation, "text": s.text, "keywords": list(s.keywords), "path": list(s.path)}
            )
    return out


# --- Details ---------------------------------------------------------------------------------------------


def _box_field() -> serializers.ListField:
    """A detail's or placement's ``box`` property, ``[x, y, w, h]``."""
    return serializers.ListField(
        child=serializers.FloatField(),
        min_length=4,
        max_length=4,
        read_only=True,
        help_text="[x, y, w, h] relative to the image (0..1).",
    )


class DetailSerializer(serializers.ModelSerializer[Detail]):
    artwork = serializers.IntegerField(source="artwork_id", read_only=True)
    box = _box_field()
    crop_url = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = Detail
        fields = [
            "id",
            "url",
            "artwork",
            "level",
            "box",
            "angle",
            "polygon",
            "label",
            "caption",
            "confidence",
            "iconclass",
            "relations",
            "model_key",
            "review_state",
            "crop_url",
        ]

    def get_crop_url(self, obj: Detail) -> str:
        return _absolute(self.context.get("request"), reverse("api:detail-crop", kwargs={"pk": obj.pk}))

    def get_url(self, obj: Detail) -> str:
        return _absolute(self.context.get("request"), reverse("api:detail-detail", kwargs={"pk": obj.pk}))


class PlacementSerializer(serializers.ModelSerializer[Placement]):
    box = _box_field()

    class Meta:
        model = Placement
        fields = ["label", "box", "confidence", "model_key"]


class DetailListQuerySerializer(serializers.Serializer):
    level = serializers.ChoiceField(choices=DetailLevel.choices, required=False)


# --- Artworks --------------------------------------------------------------------------------------------


class ImagesSerializer(serializers.Serializer):
    image = serializers.URLField(allow_null=True, help_text="The original file kept by this site.")
    thumbnail = serializers.URLField(allow_null=True)
    working = serializers.URLField(allow_null=True, help_text="The downscaled copy the models saw.")
    source = serializers.URLField(allow_null=True, help_text="Where the image came from (image_url).")
    iiif_service = serializers.URLField(allow_null=True, help_text="IIIF Image API base URL.")
    iiif_info = serializers.URLField(allow_null=True)
    iiif_full = serializers.URLField(allow_null=True, help_text="A full-size rendering through IIIF.")


class ArtworkLinksSerializer(serializers.Serializer):
    self = serializers.URLField()
    details = serializers.URLField()
    status = serializers.URLField()
    similar = serializers.URLField()


class ArtworkSerializer(serializers.ModelSerializer[Artwork]):
    artists = serializers.SerializerMethodField()
    images = serializers.SerializerMethodField()
    links = serializers.SerializerMethodField()

    class Meta:
        model = Artwork
        fields = [
            "id",
            "source",
            "source_id",
            "accession_number",
            "title",
            "artists",
            "display_date",
            "date_begin",
            "date_end",
            "medium",
            "classification",
            "collection",
            "dimensions",
            "description",
            "credit_line",
            "licence",
            "source_url",
            "iconclass",
            "status",
            "width",
            "height",
            "images",
            "links",
            "created_at",
            "updated_at",
        ]

    def get_artists(self, obj: Artwork) -> list[str]:
        return [a.name for a in obj.artists.all()]

    @extend_schema_field(ImagesSerializer)
    def get_images(self, obj: Artwork) -> dict[str, Any]:
        request = self.context.get("request")
        iiif = obj.iiif_url.rstrip("/")
        return {
            "image": _file_url(request, obj.image),
            "thumbnail": _file_url(request, obj.thumbnail),
            "working": _file_url(request, obj.working_image),
            "source": obj.image_url or None,
            "iiif_service": iiif or None,
            "iiif_info": f"{iiif}/info.json" if iiif else None,
            "iiif_full": f"{iiif}/full/max/0/default.jpg" if iiif else None,
        }

    @extend_schema_field(ArtworkLinksSerializer)
    def get_links(self, obj: Artwork) -> dict[str, str]:
        request = self.context.get("request")
        links = {
            "self": "artwork-detail",
            "details": "artwork-details",
            "status": "artwork-status",
            "similar": "artwork-similar",
        }
        return {
            key: _absolute(request, reverse(f"api:{name}", kwargs={"pk": obj.pk}))
            for key, name in links.items()
        }


class ArtworkFullSerializer(ArtworkSerializer):
    subjects = serializers.SerializerMethodField(
        help_text="The artwork's ICONCLASS notations with their texts."
    )
    details = serializers.SerializerMethodField(help_text="Visible details, every level.")
    placements = PlacementSerializer(
        many=True,
        read_only=True,
        help_text="Where the detector would outline each thing it may see (one box a label): the region a "
        "search naming that label shows. Not details: never searched or captioned.",
    )

    class Meta(ArtworkSerializer.Meta):
        fields = [*ArtworkSerializer.Meta.fields, "subjects", "details", "placements"]

    @extend_schema_field(IconclassSubjectSerializer(many=True))
    def get_subjects(self, obj: Artwork) -> list[dict[str, Any]]:
        return subjects_of(obj.iconclass)

    @extend_schema_field(DetailSerializer(many=True))
    def get_details(self, obj: Artwork) -> list[dict[str, Any]]:
        return DetailSerializer(obj.details.visible(), many=True, context=self.context).data  # type: ignore[return-value]


class ArtworkFilterSerializer(serializers.Serializer):
    artist = serializers.CharField(required=False, max_length=300, help_text="Part of an artist's name.")
    date_from = serializers.IntegerField(required=False, min_value=-5000, max_value=3000, help_text="Year.")
    date_to = serializers.IntegerField(required=False, min_value=-5000, max_value=3000, help_text="Year.")
    classification = serializers.CharField(required=False, max_length=200, help_text="Exact, any case.")
    medium = serializers.CharField(required=False, max_length=300, help_text="Part of the medium.")
    updated_since = serializers.DateTimeField(
        required=False, help_text="ISO 8601, e.g. 2026-01-31T00:00:00Z."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if (
            attrs.get("date_from") is not None
            and attrs.get("date_to") is not None
            and attrs["date_from"] > attrs["date_to"]
        ):
            raise serializers.ValidationError({"date_to": "date_to must not be before date_from."})
        return attrs


class ArtworkWriteSerializer(serializers.Serializer):
    """Create (POST) or change (PATCH) an artwork. Fields left out keep their value on PATCH."""

    source = serializers.SlugField(max_length=60, default="api", help_text="Your collection's name.")
    source_id = serializers.CharField(max_length=200, help_text="The record's id in your collection.")
    title = serializers.CharField(max_length=1000, required=False, allow_blank=True)
    artists = serializers.ListField(
        child=serializers.CharField(max_length=300), required=False, max_length=50
    )
    accession_number = serializers.CharField(max_length=120, required=False, allow_blank=True)
    display_date = serializers.CharField(max_length=200, required=False, allow_blank=True)
    date_begin = serializers.IntegerField(required=False, allow_null=True, min_value=-5000, max_value=3000)
    date_end = serializers.IntegerField(required=False, allow_null=True, min_value=-5000, max_value=3000)
    medium = serializers.CharField(max_length=1000, required=False, allow_blank=True)
    classification = serializers.CharField(max_length=200, required=False, allow_blank=True)
    collection = serializers.CharField(max_length=300, required=False, allow_blank=True)
    dimensions = serializers.CharField(max_length=500, required=False, allow_blank=True)
    description = serializers.CharField(max_length=20000, required=False, allow_blank=True)
    credit_line = serializers.CharField(max_length=1000, required=False, allow_blank=True)
    licence = serializers.CharField(max_length=300, required=False, allow_blank=True)
    source_url = serializers.URLField(max_length=1000, required=False, allow_blank=True)
    iiif_url = serializers.URLField(max_length=1000, required=False, allow_blank=True)
    image_url = serializers.URLField(max_length=1000, required=False, allow_blank=True)
    iconclass = serializers.ListField(
        child=serializers.CharField(max_length=300), required=False, max_length=200
    )
    image = serializers.ImageField(
        required=False, help_text="The picture (JPEG, PNG, TIFF...), multipart only."
    )

    def validate_image(self, value: Any) -> Any:
        limit = settings.SEMART_API["max_upload_bytes"]
        if value.size > limit:
            raise serializers.ValidationError(f"The image is larger than {limit} bytes.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        begin, end = attrs.get("date_begin"), attrs.get("date_end")
        if begin is not None and end is not None and begin > end:
            raise serializers.ValidationError({"date_end": "date_end must not be before date_begin."})
        if not self.partial and not (attrs.get("image") or attrs.get("image_url") or attrs.get("iiif_url")):
            needed = "Send an image file, an image_url or an iiif_url: the picture is what gets searched."
            raise serializers.ValidationError({"image": needed})
        return attrs


class ArtworkPatchSerializer(ArtworkWriteSerializer):
    source = None  # type: ignore[assignment]  # the record's identity does not change
    source_id = None  # type: ignore[assignment]


class ProcessingStepSerializer(serializers.ModelSerializer[ProcessingStep]):
    class Meta:
        model = ProcessingStep
        fields = [
            "stage",
            "status",
            "attempts",
            "last_error",
            "model_version",
            "queued_at",
            "started_at",
            "finished_at",
        ]


class ArtworkStatusSerializer(serializers.Serializer):
    artwork = serializers.IntegerField()
    status = serializers.ChoiceField(choices=ProcessingStatus.choices)
    done = serializers.BooleanField(help_text="True when processing finished, successfully or not.")
    steps = ProcessingStepSerializer(many=True)
    artwork_url = serializers.URLField()


class ArtworkAcceptedSerializer(serializers.Serializer):
    artwork = ArtworkSerializer()
    created = serializers.BooleanField()
    processing_queued = serializers.BooleanField()
    status_url = serializers.URLField(help_text="Poll this until `done` is true.")
    warnings = serializers.ListField(child=serializers.CharField())


# --- Search ----------------------------------------------------------------------------------------------


class SearchParamsSerializer(serializers.Serializer):
    """A search by text or by something already in the catalogue (GET)."""

    q = serializers.CharField(required=False, allow_blank=True, max_length=500, help_text="What to look for.")
    like_artwork = serializers.IntegerField(
        required=False, min_value=1, help_text="Find artworks like this one."
    )
    like_detail = serializers.IntegerField(
        required=False, min_value=1, help_text="Find regions like this detail."
    )
    level = serializers.ChoiceField(choices=LEVELS, default="artworks")
    artist = serializers.CharField(required=False, allow_blank=True, max_length=300)
    date_from = serializers.IntegerField(required=False, min_value=-5000, max_value=3000)
    date_to = serializers.IntegerField(required=False, min_value=-5000, max_value=3000)
    classification = serializers.CharField(required=False, allow_blank=True, max_length=200)
    medium = serializers.CharField(required=False, allow_blank=True, max_length=300)
    collection = serializers.CharField(required=False, allow_blank=True, max_length=300)
    exclude = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        max_length=20,
        help_text="Push these down.",
    )
    limit = serializers.IntegerField(min_value=1, max_value=100, default=24)
    offset = serializers.IntegerField(min_value=0, max_value=1000, default=0)
    alpha = serializers.FloatField(
        required=False, min_value=0.0, max_value=1.0, help_text="Weight of the reranker."
    )
    threshold = serializers.FloatField(
        required=False, min_value=0.0, max_value=1.0, help_text="Cut hits below."
    )
    rerank = serializers.BooleanField(default=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        given = [k for k in ("image", "like_artwork", "like_detail") if attrs.get(k)]
        if not (attrs.get("q") or "").strip() and not given:
            raise serializers.ValidationError(
                {"q": "Give a text (q), an image, like_artwork or like_detail."}
            )
        if len(given) > 1:
            raise serializers.ValidationError({given[1]: "Give one of image, like_artwork, like_detail."})
        return attrs


class SearchInputSerializer(SearchParamsSerializer):
    """A search that may also upload an image (POST, multipart)."""

    image = serializers.ImageField(required=False, help_text="Find pictures like this one (multipart).")

    def validate_image(self, value: Any) -> Any:
        return ArtworkWriteSerializer.validate_image(self, value)  # type: ignore[arg-type]


class SimilarQuerySerializer(serializers.Serializer):
    level = serializers.ChoiceField(choices=LEVELS, default="artworks")
    limit = serializers.IntegerField(min_value=1, max_value=100, default=24)
    offset = serializers.IntegerField(min_value=0, max_value=1000, default=0)


class RegionSerializer(serializers.Serializer):
    detail = serializers.IntegerField(
        allow_null=True, help_text="The detail shown; null for a placement (where the detector places the "
        "thing the query names, shown but not a detail of its own)."
    )  # fmt: skip
    level = serializers.CharField(help_text="entity, group, scene; or placement")
    box = serializers.ListField(child=serializers.FloatField(), min_length=4, max_length=4)
    label = serializers.CharField(allow_blank=True)
    caption = serializers.CharField(allow_blank=True)
    crop_url = serializers.URLField(allow_null=True)


class SearchHitSerializer(serializers.Serializer):
    artwork = serializers.IntegerField()
    url = serializers.URLField()
    source_id = serializers.CharField()
    title = serializers.CharField(allow_blank=True)
    artist_names = serializers.CharField(allow_blank=True)
    display_date = serializers.CharField(allow_blank=True)
    thumbnail_url = serializers.CharField(allow_blank=True)
    score = serializers.FloatField()
    vector_score = serializers.FloatField()
    rerank_score = serializers.FloatField(allow_null=True)
    region = RegionSerializer(
        allow_null=True, help_text="Where in the picture the query matched, if inside it."
    )
    legs = serializers.DictField(child=serializers.FloatField(), help_text="Evidence per leg of the search.")


class SearchResultSerializer(serializers.Serializer):
    results = SearchHitSerializer(many=True)
    has_more = serializers.BooleanField()
    next_offset = serializers.IntegerField(allow_null=True, help_text="Send as `offset` for the next page.")
    next = serializers.URLField(allow_null=True, help_text="The next page (GET searches only).")
    reranked = serializers.BooleanField()
    degraded = serializers.CharField(
        allow_blank=True, help_text="Why this answer is less than usual, if it is."
    )
    timings_ms = serializers.DictField(child=serializers.FloatField())


# --- Health ----------------------------------------------------------------------------------------------


class HealthCheckSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    ms = serializers.FloatField()
    error = serializers.CharField(allow_blank=True)


class WorkersCheckSerializer(HealthCheckSerializer):
    workers = serializers.ListField(
        child=serializers.CharField(), help_text="The first worker that answered (the check stops there)."
    )


class HealthChecksSerializer(serializers.Serializer):
    database = HealthCheckSerializer()
    broker = HealthCheckSerializer()
    workers = WorkersCheckSerializer()


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=HEALTH_STATUSES)
    checks = HealthChecksSerializer()

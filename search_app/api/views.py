"""Partner API v1 views: validate with a serializer, call one service or selector, serialize.

Search and "similar" are async (adrf) so that, under an ASGI server, the search is awaited by the request and
cancelled with it when the client goes away.
"""

from __future__ import annotations

import logging
from typing import Any

from adrf.views import APIView as AsyncAPIView
from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, generics, serializers, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from collections_app.iconography import normalise_notation, subject
from collections_app.models import Artwork, Detail
from collections_app.selectors import artwork_details
from collections_app.services import ArtworkData, artwork_upsert
from search_app.api import selectors
from search_app.api import serializers as s
from search_app.api.authentication import ApiKeyAuthentication
from search_app.api.health import health_report
from search_app.api.iconclass_search import iconclass_search
from search_app.api.pagination import ArtworkCursorPagination
from search_app.api.permissions import HasApiScope
from search_app.api.schema import ApiAutoSchema
from search_app.api.services import artwork_delete
from search_app.api.throttling import ApiRateThrottle

logger = logging.getLogger(__name__)

ERROR = inline_serializer(
    "Error",
    {
        "error": inline_serializer(
            "ErrorDetail",
            {
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "details": serializers.JSONField(),
            },
        )
    },
)
READ_ERRORS = {400: ERROR, 401: ERROR, 404: ERROR, 429: ERROR}
WRITE_ERRORS = {**READ_ERRORS, 403: ERROR}


class ApiAccess:
    schema = ApiAutoSchema()
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [HasApiScope]
    throttle_classes = [ApiRateThrottle]


def _artwork_or_404(pk: int) -> Artwork:
    try:
        return selectors.artwork_get_full(pk=pk)
    except Artwork.DoesNotExist:
        raise exceptions.NotFound(f"No artwork {pk}.") from None


def _status_url(request: Request, artwork: Artwork) -> str:
    return request.build_absolute_uri(reverse("api:artwork-status", kwargs={"pk": artwork.pk}))


def _upsert(request: Request, data: dict[str, Any], *, artwork: Artwork | None) -> Response:
    image = data.pop("image", None)
    if artwork is not None:
        data["source"], data["source_id"] = artwork.source, artwork.source_id
    record = ArtworkData(**{k: v for k, v in data.items() if v is not None})
    if image is not None:
        image.seek(0)
    result = artwork_upsert(
        data=record,
        image_bytes=image.read() if image is not None else None,
        image_name=image.name if image is not None else "",
        queue_processing=True,  # the API promises a status URL to poll: always process what it accepts
    )
    queued = result.image_changed and result.artwork.has_image_source()
    fresh = selectors.artwork_get_full(pk=result.artwork.pk)
    status_url = _status_url(request, fresh)
    body = {
        "artwork": s.ArtworkSerializer(fresh, context={"request": request}).data,
        "created": result.created,
        "processing_queued": queued,
        "status_url": status_url,
        "warnings": result.warnings,
    }
    code = (
        status.HTTP_202_ACCEPTED
        if queued
        else (status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)
    )
    return Response(body, status=code, headers={"Location": status_url} if queued else None)


@extend_schema(tags=["artworks"])
class ArtworkListView(ApiAccess, generics.GenericAPIView[Artwork]):
    serializer_class = s.ArtworkSerializer
    pagination_class = ArtworkCursorPagination
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    @extend_schema(
        summary="List artworks",
        parameters=[s.ArtworkFilterSerializer],
        responses={200: s.ArtworkSerializer(many=True), **READ_ERRORS},
    )
    def get(self, request: Request) -> Response:
        filters = s.ArtworkFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        page = self.paginate_queryset(selectors.artwork_list_filtered(**filters.validated_data))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        summary="Add an artwork (write scope); its processing is queued",
        request={
            "multipart/form-data": s.ArtworkWriteSerializer,
            "application/json": s.ArtworkWriteSerializer,
        },
        responses={
            202: OpenApiResponse(s.ArtworkAcceptedSerializer, description="Accepted; poll `status_url`."),
            200: s.ArtworkAcceptedSerializer,
            201: s.ArtworkAcceptedSerializer,
            **WRITE_ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        inp = s.ArtworkWriteSerializer(data=request.data)
        inp.is_valid(raise_exception=True)
        return _upsert(request, dict(inp.validated_data), artwork=None)


@extend_schema(tags=["artworks"])
class ArtworkItemView(ApiAccess, APIView):
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    @extend_schema(
        summary="An artwork with its details and subjects",
        responses={200: s.ArtworkFullSerializer, **READ_ERRORS},
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(s.ArtworkFullSerializer(_artwork_or_404(pk), context={"request": request}).data)

    @extend_schema(
        summary="Change an artwork (write scope); a new image queues processing again",
        request={
            "multipart/form-data": s.ArtworkPatchSerializer,
            "application/json": s.ArtworkPatchSerializer,
        },
        responses={200: s.ArtworkAcceptedSerializer, 202: s.ArtworkAcceptedSerializer, **WRITE_ERRORS},
    )
    def patch(self, request: Request, pk: int) -> Response:
        artwork = _artwork_or_404(pk)
        inp = s.ArtworkPatchSerializer(data=request.data, partial=True)
        inp.is_valid(raise_exception=True)
        return _upsert(request, dict(inp.validated_data), artwork=artwork)

    @extend_schema(summary="Delete an artwork (write scope)", responses={204: None, **WRITE_ERRORS})
    def delete(self, request: Request, pk: int) -> Response:
        artwork_delete(artwork=_artwork_or_404(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=["artworks"])
class ArtworkDetailsView(ApiAccess, APIView):
    @extend_schema(
        summary="The details (regions) of an artwork, optionally of one level",
        parameters=[s.DetailListQuerySerializer],
        responses={200: s.DetailSerializer(many=True), **READ_ERRORS},
    )
    def get(self, request: Request, pk: int) -> Response:
        query = s.DetailListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        details = artwork_details(artwork=_artwork_or_404(pk), level=query.validated_data.get("level"))
        return Response(s.DetailSerializer(details, many=True, context={"request": request}).data)


@extend_schema(tags=["artworks"])
class ArtworkStatusView(ApiAccess, APIView):
    @extend_schema(
        summary="Processing status of an artwork, stage by stage",
        responses={200: s.ArtworkStatusSerializer, **READ_ERRORS},
    )
    def get(self, request: Request, pk: int) -> Response:
        artwork = _artwork_or_404(pk)
        body = {
            "artwork": artwork.pk,
            "status": artwork.status,
            "done": selectors.artwork_processing_done(artwork=artwork),
            "steps": s.ProcessingStepSerializer(selectors.artwork_steps(artwork=artwork), many=True).data,
            "artwork_url": request.build_absolute_uri(
                reverse("api:artwork-detail", kwargs={"pk": artwork.pk})
            ),
        }
        return Response(body)


def _detail_or_404(pk: int) -> Detail:
    try:
        return selectors.detail_get(pk=pk)
    except Detail.DoesNotExist:
        raise exceptions.NotFound(f"No detail {pk}.") from None


@extend_schema(tags=["details"])
class DetailItemView(ApiAccess, APIView):
    @extend_schema(summary="One detail with its crop URL", responses={200: s.DetailSerializer, **READ_ERRORS})
    def get(self, request: Request, pk: int) -> Response:
        return Response(s.DetailSerializer(_detail_or_404(pk), context={"request": request}).data)


class JsonErrorsNegotiation(BaseContentNegotiation):
    """The crop answers image/jpeg whatever the Accept header says; its errors stay JSON."""

    def select_parser(self, request: Request, parsers: list[Any]) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(
        self, request: Request, renderers: list[Any], format_suffix: str | None = None
    ) -> Any:
        return renderers[0], renderers[0].media_type


@extend_schema(tags=["details"])
class DetailCropView(ApiAccess, APIView):
    content_negotiation_class = JsonErrorsNegotiation

    @extend_schema(
        summary="The detail's region cut from the picture (JPEG)",
        responses={(200, "image/jpeg"): OpenApiTypes.BINARY, **READ_ERRORS},
    )
    def get(self, request: Request, pk: int) -> HttpResponse:
        detail = _detail_or_404(pk)
        try:
            jpeg = selectors.detail_crop_jpeg(detail=detail)
        except selectors.NoImageToCrop as exc:
            raise exceptions.NotFound(str(exc)) from None
        response = HttpResponse(jpeg, content_type="image/jpeg")
        response["Cache-Control"] = "public, max-age=3600"
        return response


# --- Search ----------------------------------------------------------------------------------------------


class SearchUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Search is not available on this server right now."
    default_code = "search_unavailable"


class _HitUrls:
    """The artwork and crop URLs of a page of hits: each resolved once with a stand-in id, then filled in
    (reversing and absolutising two URLs for each of 24 hits took ~1 ms a search)."""

    STAND_IN = "987654321"

    def __init__(self, request: Request) -> None:
        artwork = request.build_absolute_uri(reverse("api:artwork-detail", kwargs={"pk": self.STAND_IN}))
        crop = request.build_absolute_uri(reverse("api:detail-crop", kwargs={"pk": self.STAND_IN}))
        # Split at the last stand-in: the host or a path prefix may hold the same digits.
        self.artwork = artwork.rpartition(self.STAND_IN)[::2]
        self.crop = crop.rpartition(self.STAND_IN)[::2]

    def artwork_url(self, pk: int) -> str:
        return f"{self.artwork[0]}{int(pk)}{self.artwork[1]}"

    def crop_url(self, pk: int) -> str:
        return f"{self.crop[0]}{int(pk)}{self.crop[1]}"


def _hit_body(request: Request, hit: Any, urls: _HitUrls) -> dict[str, Any]:
    region = None
    if hit.detail is not None:
        region = {
            "detail": hit.detail.id,
            "level": hit.detail.level,
            "box": list(hit.detail.box),
            "label": hit.detail.label,
            "caption": hit.detail.caption,
            "crop_url": urls.crop_url(hit.detail.id) if hit.detail.id is not None else None,
        }
    return {
        "artwork": hit.artwork_id,
        "url": urls.artwork_url(hit.artwork_id),
        "source_id": hit.source_id,
        "title": hit.title,
        "artist_names": hit.artist_names,
        "display_date": hit.display_date,
        "thumbnail_url": request.build_absolute_uri(hit.thumbnail_url) if hit.thumbnail_url else "",
        "score": hit.score,
        "vector_score": hit.vector_score,
        "rerank_score": hit.rerank_score,
        "region": region,
        "legs": dict(hit.legs),
    }


async def _run_search(request: Request, data: dict[str, Any], *, next_base: str | None) -> Response:
    from search_app.types import SearchFilters, SearchQuery

    try:
        from search_app.pipeline import search  # the pipeline loads models lazily; import it only here
        from search_app.query_parsing import QueryError
        from workers.inference.base import ModelLoadError
    except ImportError:
        raise SearchUnavailable() from None

    if data.get("like_artwork") and not await Artwork.objects.filter(pk=data["like_artwork"]).aexists():
        raise exceptions.NotFound(f"No artwork {data['like_artwork']}.")
    if (
        data.get("like_detail")
        and not await Detail.objects.visible().filter(pk=data["like_detail"]).aexists()
    ):
        raise exceptions.NotFound(f"No detail {data['like_detail']}.")
    image = data.get("image")
    if image is not None:
        image.seek(0)
    query = SearchQuery(
        text=(data.get("q") or "").strip(),
        image_bytes=image.read() if image is not None else None,
        like_artwork_id=data.get("like_artwork"),
        like_detail_id=data.get("like_detail"),
        level=data["level"],
        filters=SearchFilters(
            artist=data.get("artist") or "",
            year_from=data.get("date_from"),
            year_to=data.get("date_to"),
            classification=data.get("classification") or "",
            medium=data.get("medium") or "",
            collection=data.get("collection") or "",
        ),
        exclude=tuple(data.get("exclude") or ()),
        limit=data["limit"],
        offset=data["offset"],
        alpha=data.get("alpha"),
        threshold=data.get("threshold"),
        rerank=data["rerank"],
    )
    try:
        # No request_key: a partner may run searches in parallel; each stops only when its own request ends.
        result = await search(query)
    except QueryError as exc:
        raise exceptions.ValidationError({"q": [str(exc)]}) from None
    except ModelLoadError as exc:
        # A deployment without its model files (e.g. an untrained head): say so instead of a bare 500.
        logger.error("search unavailable: %s", exc)
        raise SearchUnavailable(
            "Search is not available: the search models are not installed on this server."
        ) from None
    next_offset = data["offset"] + data["limit"] if result.has_more else None
    next_url = None
    if next_offset is not None and next_base is not None:
        params = request.query_params.copy()
        params["offset"] = str(next_offset)
        next_url = request.build_absolute_uri(f"{next_base}?{params.urlencode()}")
    urls = _HitUrls(request)
    body = {
        "results": [_hit_body(request, hit, urls) for hit in result.hits],
        "has_more": result.has_more,
        "next_offset": next_offset,
        "next": next_url,
        "reranked": result.reranked,
        "degraded": result.degraded,
        "timings_ms": dict(result.timings_ms),
    }
    return Response(body)


SEARCH_ERRORS = {**READ_ERRORS, 503: ERROR}


@extend_schema(tags=["search"])
class SearchView(ApiAccess, AsyncAPIView):
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    post_is_read = True

    @extend_schema(
        summary="Search by text or by an artwork/detail already in the catalogue",
        parameters=[s.SearchParamsSerializer],
        responses={200: s.SearchResultSerializer, **SEARCH_ERRORS},
    )
    async def get(self, request: Request) -> Response:
        inp = s.SearchParamsSerializer(data=request.query_params)
        inp.is_valid(raise_exception=True)
        return await _run_search(request, dict(inp.validated_data), next_base=request.path)

    @extend_schema(
        summary="Search by text, an uploaded image, or an artwork/detail",
        request={"multipart/form-data": s.SearchInputSerializer, "application/json": s.SearchInputSerializer},
        responses={200: s.SearchResultSerializer, **SEARCH_ERRORS},
    )
    async def post(self, request: Request) -> Response:
        inp = s.SearchInputSerializer(data=request.data)
        inp.is_valid(raise_exception=True)
        return await _run_search(request, dict(inp.validated_data), next_base=None)


@extend_schema(tags=["search"])
class SimilarView(ApiAccess, AsyncAPIView):
    @extend_schema(
        summary="Artworks (or details) that look like this artwork",
        parameters=[s.SimilarQuerySerializer],
        responses={200: s.SearchResultSerializer, **SEARCH_ERRORS},
    )
    async def get(self, request: Request, pk: int) -> Response:
        inp = s.SimilarQuerySerializer(data=request.query_params)
        inp.is_valid(raise_exception=True)
        data = {**inp.validated_data, "like_artwork": pk, "rerank": True}
        return await _run_search(request, data, next_base=request.path)


# --- ICONCLASS -------------------------------------------------------------------------------------------


@extend_schema(tags=["iconclass"])
class IconclassSearchView(ApiAccess, APIView):
    @extend_schema(
        summary="ICONCLASS notations whose English text contains these words",
        operation_id="iconclass_search",
        parameters=[s.IconclassQuerySerializer],
        responses={200: s.IconclassSearchSerializer, **READ_ERRORS},
    )
    def get(self, request: Request) -> Response:
        inp = s.IconclassQuerySerializer(data=request.query_params)
        inp.is_valid(raise_exception=True)
        notations = iconclass_search(text=inp.validated_data["q"], limit=inp.validated_data["limit"])
        return Response({"query": inp.validated_data["q"], "results": s.subjects_of(notations)})


@extend_schema(tags=["iconclass"])
class IconclassNotationView(ApiAccess, APIView):
    @extend_schema(
        summary="An ICONCLASS notation's text, keywords and path",
        operation_id="iconclass_notation",
        parameters=[OpenApiParameter("notation", str, OpenApiParameter.PATH, description="e.g. 11H(JEROME)")],
        responses={200: s.IconclassSubjectSerializer, **READ_ERRORS},
    )
    def get(self, request: Request, notation: str) -> Response:
        found = subject(normalise_notation(notation))
        if found is None:
            raise exceptions.NotFound(f"Unknown ICONCLASS notation {notation!r}.")
        return Response(s.subjects_of([found.notation])[0])


# --- Health ----------------------------------------------------------------------------------------------


@extend_schema(tags=["health"])
class HealthView(APIView):
    # Load balancers call this without a key, often: never throttle or authenticate it.
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes: list[Any] = []

    @extend_schema(
        summary="Database, broker and workers: 200 while the database answers (status 'degraded' without the "
        "broker or workers), 503 without it",
        responses={200: s.HealthSerializer, 503: s.HealthSerializer},
    )
    def get(self, request: Request) -> Response:
        report, serving = health_report()
        return Response(report, status=status.HTTP_200_OK if serving else status.HTTP_503_SERVICE_UNAVAILABLE)

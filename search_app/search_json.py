"""``GET /search.json``: the search as JSON, for the pages' infinite scroll.

Async on purpose: under ASGI a client that disconnects cancels this view, and the pipeline stops the rerank
working for it. A sync view would never notice (measured: the task ran on for 20 s).
"""

from __future__ import annotations

import re
from dataclasses import asdict

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_safe

from search_app.query_parsing import QueryError, query_from_params
from search_app.types import SearchResponse

_CLIENT = re.compile(r"[A-Za-z0-9_-]{8,64}")


def _request_key(request: HttpRequest) -> str | None:
    """Who is searching: the page's client id parameter, else the browser's client cookie."""
    from search_app.views import client_id  # the pages set the cookie; one id for page and scroll

    given = request.GET.get("client", "")
    if _CLIENT.fullmatch(given):
        return f"visitor:{given}"
    cookie = client_id(request)
    return f"visitor:{cookie}" if cookie else None


def response_json(response: SearchResponse) -> dict[str, object]:
    query = response.query
    return {
        "query": {
            "text": query.text,
            "exclude": list(query.exclude),
            "level": query.level,
            "filters": asdict(query.filters),
            "offset": query.offset,
            "limit": query.limit,
        },
        "hits": [asdict(hit) for hit in response.hits],
        "has_more": response.has_more,
        "next_offset": query.offset + len(response.hits) if response.has_more else None,
        "reranked": response.reranked,
        "degraded": response.degraded,
        "timings_ms": response.timings_ms,
    }


@require_safe
async def search_json(request: HttpRequest) -> JsonResponse:
    from search_app.pipeline import search

    try:
        query = query_from_params(request.GET)
    except QueryError as error:
        return JsonResponse({"error": str(error)}, status=400)
    try:
        response = await search(query, request_key=_request_key(request))
    except QueryError as error:
        return JsonResponse({"error": str(error)}, status=400)
    return JsonResponse(response_json(response))

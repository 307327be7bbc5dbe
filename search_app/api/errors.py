"""One error body for the whole API: {"error": {"code": ..., "message": ..., "details": ...}}.

Partners write one error path in their client, so every 4xx and 5xx of /api/v1/ has this shape: DRF's own
exceptions, Django's Http404/PermissionDenied/ValidationError raised by services, unknown URLs and crashes.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details if details is not None else {}}}


def _message_of(detail: Any) -> str:
    if isinstance(detail, list) and detail:
        return _message_of(detail[0])
    if isinstance(detail, dict) and detail:
        return _message_of(next(iter(detail.values())))
    return str(detail)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    if isinstance(exc, DjangoValidationError):
        details = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(details)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        # Not an API exception: a bug or a dead dependency. Log it with the traceback; say nothing internal.
        logger.exception("Unhandled error in %s", context.get("view").__class__.__name__)
        return Response(
            error_body("server_error", "The server could not complete the request."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    assert isinstance(exc, exceptions.APIException)
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_body("invalid", "The request is not valid: see details.", exc.detail)
    elif isinstance(exc, exceptions.Throttled):
        wait = math.ceil(exc.wait) if exc.wait is not None else None
        response.data = error_body(
            "throttled",
            f"Too many requests. Try again in {wait} seconds." if wait else "Too many requests.",
            {"retry_after": wait},
        )
    else:
        code = exc.get_codes()
        response.data = error_body(
            code if isinstance(code, str) else exc.default_code, _message_of(exc.detail)
        )
    return response


@csrf_exempt  # otherwise a POST/PATCH to an unknown URL gets the CSRF page (HTML 403) instead of this 404
def not_found_view(request: HttpRequest, path: str = "") -> JsonResponse:
    """Unknown URLs under /api/v1/ answer in the API's shape rather than the site's HTML 404 page."""
    return JsonResponse(error_body("not_found", f"No API endpoint at {request.path}."), status=404)

"""The URLs the OpenAPI schema describes: the partner API only, with its /api/v1/ prefix."""

from django.urls import include, path

urlpatterns = [path("api/v1/", include("search_app.api.urls"))]

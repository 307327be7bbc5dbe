from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from search_app.api import views
from search_app.api.errors import not_found_view

app_name = "api"
urlpatterns = [
    path("artworks/", views.ArtworkListView.as_view(), name="artwork-list"),
    path("artworks/<int:pk>/", views.ArtworkItemView.as_view(), name="artwork-detail"),
    path("artworks/<int:pk>/details/", views.ArtworkDetailsView.as_view(), name="artwork-details"),
    path("artworks/<int:pk>/status/", views.ArtworkStatusView.as_view(), name="artwork-status"),
    path("artworks/<int:pk>/similar/", views.SimilarView.as_view(), name="artwork-similar"),
    path("details/<int:pk>/", views.DetailItemView.as_view(), name="detail-detail"),
    path("details/<int:pk>/crop/", views.DetailCropView.as_view(), name="detail-crop"),
    path("search/", views.SearchView.as_view(), name="search"),
    path("iconclass/", views.IconclassSearchView.as_view(), name="iconclass-search"),
    path("iconclass/<path:notation>/", views.IconclassNotationView.as_view(), name="iconclass-notation"),
    path("health/", views.HealthView.as_view(), name="health"),
    path("schema/", SpectacularAPIView.as_view(urlconf="search_app.api.schema_urls"), name="schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api:schema"), name="redoc"),
    re_path(r"^(?P<path>[\s\S]*)$", not_found_view),  # [\s\S]: even a path with a newline gets JSON
]

from django.conf import settings
from django.urls import path

from search_app import media, search_json, views

app_name = "search"
urlpatterns = [
    path("", views.search_page, name="home"),
    path("search", views.search_page, name="search"),
    path("search/by-picture", views.search_by_picture, name="by_picture"),
    path("artworks/<int:pk>/", views.artwork_page, name="artwork"),
    path("search.json", search_json.search_json, name="search_json"),
    # Artworks' pictures from storage, in production too (only image types, only the images' folders).
    path(f"{settings.MEDIA_URL.strip('/')}/<path:path>", media.serve_artwork_image, name="media"),
]

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from collections_app.selectors import artwork_list_recent


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "search_app/home.html", {"artworks": artwork_list_recent(limit=24)})

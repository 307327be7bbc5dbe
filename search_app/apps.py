from django.apps import AppConfig


class SearchConfig(AppConfig):
    name = "search_app"
    verbose_name = "Search"

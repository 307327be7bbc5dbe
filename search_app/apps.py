from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


def _forget_api_keys(**kwargs: Any) -> None:
    from search_app.api.services import forget_api_keys

    forget_api_keys()


class SearchConfig(AppConfig):
    name = "search_app"
    verbose_name = "Search"

    def ready(self) -> None:
        # A key saved or deleted here (the admin, the shell) is not trusted from memory any more.
        post_save.connect(_forget_api_keys, sender="search_app.ApiKey", dispatch_uid="forget-api-keys-save")
        post_delete.connect(_forget_api_keys, sender="search_app.ApiKey", dispatch_uid="forget-api-keys-del")

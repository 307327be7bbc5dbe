from django.apps import AppConfig


class CollectionsConfig(AppConfig):
    name = "collections_app"
    verbose_name = "Collection"
    default_auto_field = "django.db.models.BigAutoField"

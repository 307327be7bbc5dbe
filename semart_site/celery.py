"""The Celery app, configured from Django settings (CELERY_* names)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "semart_site.settings.local")

app = Celery("semart")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Tasks outside an app's tasks.py module, which autodiscovery would not find.
app.conf.imports = ("workers.search_tasks",)

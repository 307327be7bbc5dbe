"""Test settings: real PostgreSQL + pgvector and real Redis, nothing faked here."""

from .base import *  # noqa: F403
from .base import CACHE_OPTIONS, env

DEBUG = False
SECRET_KEY = "test-only-key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# A detail a test hides is hidden for the next search (the site re-reads them every few seconds).
SEARCH = {**SEARCH, "hidden_refresh_s": 0.0}  # noqa: F405
# Tests queue work explicitly; nothing is processed behind a test's back.
SEMART_PROCESS_ON_SAVE = False
STORAGES = {
    "default": {"BACKEND": "semart_site.storage.AtomicFileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# A separate Redis database, so a test run never touches a developer's demo queues.
REDIS_URL = env("TEST_REDIS_URL", default="redis://127.0.0.1:6379/15")
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CACHES = {
    "default": {
        "BACKEND": "semart_site.cache.FailSoftRedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": CACHE_OPTIONS,
    }
}

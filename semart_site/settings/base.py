"""Settings shared by every deployment. Every deployment value comes from the environment."""

from __future__ import annotations

from pathlib import Path

import environ
from corsheaders.defaults import default_headers as cors_default_headers

from semart_site.embedded import embedded_postgres_settings

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()

# One folder holds everything an instance writes: the embedded database, media, indexes.
# An empty folder is a fresh instance.
SEMART_DATA_DIR = Path(env("SEMART_DATA_DIR", default=str(BASE_DIR / "var"))).resolve()

SECRET_KEY = env("DJANGO_SECRET_KEY", default="")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "corsheaders",
    "collections_app",
    "search_app",
    "workers",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "semart_site.middleware.ContentSecurityPolicyMiddleware",
    "semart_site.middleware.StaticFilesMiddleware",  # WhiteNoise, async-capable
    # Before CommonMiddleware, so preflight requests are answered with the CORS headers.
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "semart_site.urls"
ASGI_APPLICATION = "semart_site.asgi.application"
WSGI_APPLICATION = "semart_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------
# DATABASE_URL selects any PostgreSQL with pgvector; without it the embedded server starts.
if env("DATABASE_URL", default=""):
    DATABASES = {"default": env.db("DATABASE_URL")}
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
else:
    DATABASES = {"default": embedded_postgres_settings(SEMART_DATA_DIR)}
# The site runs under ASGI, where a kept connection belongs to a short-lived thread and lingers after it:
# benchmarks/load_test.py saw ~100 open at 16-32 users, then "too many clients already". So each request
# closes its own (Django's advice for async); a pooler (PgBouncer) in front of PostgreSQL is the production
# answer to connection cost (docs/scaling.md).
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=0)
# DATABASE_POOL=N: a psycopg connection pool of up to N connections in each process (Django's own, 5.1+):
# a request borrows one instead of connecting (~6 ms a request on the 1M benchmark's machine). 0, the
# default: each request connects (put PgBouncer in front when many processes do). Needs CONN_MAX_AGE 0.
# With the legs on threads (SEARCH["parallel_legs"]) a search borrows up to 5 at once, and each in-memory
# index's background sync one: 8 or more.
if env.int("DATABASE_POOL", default=0) > 0:
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env.int("DATABASE_POOL"),
        "timeout": 10,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = SEMART_DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "semart_site" / "static"]
# Uploads live outside the code tree, under the instance's data folder.
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env("SEMART_MEDIA_ROOT", default=str(SEMART_DATA_DIR / "media")))
# Files appear whole or not at all: a full disk or a crash mid-write leaves no truncated file behind.
STORAGES = {
    "default": {"BACKEND": "semart_site.storage.AtomicFileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 50 * 1024 * 1024

# --- Redis and Celery -----------------------------------------------------------------------------
REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")


def _kombu_url(url: str) -> str:
    # redis-py spells a socket "unix://", kombu "redis+socket://".
    return "redis+socket://" + url.removeprefix("unix://") if url.startswith("unix://") else url


CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=_kombu_url(REDIS_URL))
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=_kombu_url(REDIS_URL))
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_EXPIRES = 3600
# Nothing reads task results (searches get theirs through Redis mailboxes, the pipeline through the database).
# Storing none also keeps apply_async from subscribing to the result backend, which with Redis down retries
# for ~20 s and then raises RuntimeError instead of the broker error callers handle.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_TIME_LIMIT = 15 * 60
CELERY_TASK_SOFT_TIME_LIMIT = 10 * 60
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A task not acknowledged within this time is handed to another worker (Redis transport).
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)

# The cache only saves work (query vectors, rankings, ICONCLASS expansions, rate counts): with Redis down it
# reads as empty and writes are dropped, so pages still answer (semart_site/cache.py).
CACHE_OPTIONS = {"socket_connect_timeout": 1.0, "socket_timeout": 2.0}
CACHES = {
    "default": {
        "BACKEND": "semart_site.cache.FailSoftRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "semart",
        "OPTIONS": CACHE_OPTIONS,
    }
}

# --- Models and processing --------------------------------------------------------------------------
# Each role picks a backend by key (workers/inference/registry.py lists them).
SEMART_MODELS = {
    "embedder": env("SEMART_EMBEDDER", default="offline-minilm-effnet"),
    "detector": env("SEMART_DETECTOR", default="offline-ssd-windows"),
    "captioner": env("SEMART_CAPTIONER", default="composed"),
    "reranker": env("SEMART_RERANKER", default="offline-details"),
}
SEMART_DEVICE = env("SEMART_DEVICE", default="auto")  # auto | cpu | cuda
# The phrases the pipeline names a detector's unnamed regions from (SAM), comma-separated; empty: the art
# vocabulary in workers/inference/vocabulary.py.
SEMART_REGION_LABELS = env.list("SEMART_REGION_LABELS", default=[])
SEMART_MODEL_DIR = Path(env("SEMART_MODEL_DIR", default=str(SEMART_DATA_DIR / "models")))
SEMART_PROCESS_ON_SAVE = env.bool("SEMART_PROCESS_ON_SAVE", default=True)

# Image fetching (workers/imaging): limits against decompression bombs and slow or hostile servers.
SEMART_FETCH = {
    "timeout_s": env.float("SEMART_FETCH_TIMEOUT", default=20.0),
    "max_bytes": env.int("SEMART_FETCH_MAX_BYTES", default=60 * 1024 * 1024),
    "max_pixels": env.int("SEMART_MAX_PIXELS", default=120_000_000),
    "allowed_hosts": env.list("SEMART_FETCH_ALLOWED_HOSTS", default=[]),
    "working_long_side": 1024,
}

# --- REST framework ----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # One JSON error body for every 4xx/5xx: {"error": {"code", "message", "details"}}.
    "EXCEPTION_HANDLER": "search_app.api.errors.api_exception_handler",
    # Proxies in front of the site: 0 counts anonymous callers by the socket address, so a forged
    # X-Forwarded-For cannot dodge the anonymous rate; behind one load balancer set API_NUM_PROXIES=1.
    "NUM_PROXIES": env.int("API_NUM_PROXIES", default=0),
}
# Partner API (search_app/api): rates as DRF spells them ("60/minute"); a key's own rate overrides key_rate.
SEMART_API = {
    "anon_rate": env("API_ANON_RATE", default="60/minute"),
    "key_rate": env("API_KEY_RATE", default="600/minute"),
    "max_upload_bytes": env.int("API_MAX_UPLOAD_BYTES", default=30 * 1024 * 1024),
    "health_timeout_s": env.float("API_HEALTH_TIMEOUT", default=1.0),
    # a verified key is trusted this long by each web process: a key deactivated in the admin stops
    # working at once in the process that deactivated it, within this in the others
    "key_cache_s": env.float("API_KEY_CACHE_S", default=5.0),
}
# CORS for the partner API only, and only for the origins a deployment names.
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_URLS_REGEX = r"^/api/.*$"
CORS_ALLOW_HEADERS = (*cors_default_headers, "x-api-key")
CORS_EXPOSE_HEADERS = ["Location", "Retry-After"]
SPECTACULAR_SETTINGS = {
    "TITLE": "Semart API",
    "DESCRIPTION": "Art collections and a search that sees the pictures.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc served from our own static files: the CDN default is unreachable offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several "status" fields with different choices: name each set (--fail-on-warn otherwise fails).
    "ENUM_NAME_OVERRIDES": {
        "ProcessingStatusEnum": "collections_app.models.ProcessingStatus",
        "StageStatusEnum": "collections_app.models.StageStatus",
        "HealthStatusEnum": "search_app.api.health.HEALTH_STATUSES",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("DJANGO_LOG_LEVEL", default="INFO")},
    "loggers": {"pgserver": {"level": "WARNING"}},
}

# --- Search (search_app) -------------------------------------------------------------------------------
SEARCH = {
    "candidates": env.int("SEARCH_CANDIDATES", default=64),
    "page_size": 24,
    # final = alpha * rerank + (1 - alpha) * normalised first-stage similarity
    # (tuned on art-dev: docs/evaluation.md)
    "alpha": env.float("SEARCH_ALPHA", default=0.5),
    # hits whose final score falls below this are cut instead of padding the page
    "threshold": env.float("SEARCH_THRESHOLD", default=0.0),
    "index": env("SEARCH_INDEX", default="pgvector"),  # pgvector | faiss
    "faiss_gpu": env.bool("SEARCH_FAISS_GPU", default=False),
    # FAISS IVF lists searched per query, for image vectors (crops, whole pictures) and for caption vectors.
    # At 1M details (4,000 lists, SQ8, 30 Nov): crops 256 -> recall@10 0.967 in 2.1 ms, 192 -> 0.955,
    # 128 -> 0.92; captions 128 -> 0.975 in 1.2 ms, 256 -> 0.985 in 2.2 ms (docs/benchmarks.md)
    "faiss_nprobe": env.int("SEARCH_FAISS_NPROBE", default=256),
    "faiss_nprobe_text": env.int("SEARCH_FAISS_NPROBE_TEXT", default=128),
    # how an IVF index (from 50k vectors) stores them: sq8 (a byte a dimension: a quarter of the memory,
    # twice as fast, recall@10 0.967 at 1M crops) or flat (float32, 0.980)
    "faiss_codec": env("SEARCH_FAISS_CODEC", default="sq8"),
    # postgres: the full-text leg ranks in PostgreSQL; memory: an in-memory BM25 word index
    # (search_app.text_index, built by `manage.py search_index rebuild`) for large collections
    "text_index": env("SEARCH_TEXT_INDEX", default="postgres"),
    # run the first stage's legs on threads: unset = when DATABASE_POOL is (each thread needs a connection)
    "parallel_legs": env.bool("SEARCH_PARALLEL_LEGS", default=None),
    "hnsw_ef_search": env.int("SEARCH_HNSW_EF_SEARCH", default=100),
    # below this many rows after filtering, scan exactly instead of walking the HNSW graph
    "exact_scan_below": env.int("SEARCH_EXACT_SCAN_BELOW", default=20_000),
    "rerank_timeout_s": env.float("SEARCH_RERANK_TIMEOUT", default=10.0),
    # Each statement of a word-matching leg (full text, ICONCLASS) gets this long in PostgreSQL, then the
    # leg is skipped and the answer says so: on a huge collection a common word matches too many rows
    # (0: no budget).
    "text_leg_budget_ms": env.int("SEARCH_TEXT_LEG_BUDGET_MS", default=1000),
    # The in-memory legs (FAISS, the word index) re-read which details are hidden at most this often; a
    # page never shows a hidden one (it reads the database).
    "hidden_refresh_s": env.float("SEARCH_HIDDEN_REFRESH_S", default=5.0),
}

# --- Security headers ----------------------------------------------------------------------------------
# SecurityMiddleware: nosniff, referrer policy, opener policy; XFrameOptionsMiddleware: DENY. Stated here,
# not left to Django's defaults, so a reader sees them; production adds HSTS, TLS redirects, secure cookies.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
# Content-Security-Policy (semart_site/middleware.py). No inline or eval'd script anywhere: every script is a
# static file. Inline style *attributes* place the detail boxes over pictures (style-src-attr); pictures may
# come from a collection's IIIF or image server, hence https: for images only.
CSP_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "style-src-attr": ["'unsafe-inline'"],
    "img-src": ["'self'", "data:", "https:"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
# Swagger UI and Redoc inject <style> elements and Redoc runs its search in a blob: worker: these pages only
# get inline styles and blob workers; their scripts are still static files.
CSP_POLICY_OVERRIDES = {
    "/api/v1/docs/": {"style-src": ["'self'", "'unsafe-inline'"], "worker-src": ["'self'", "blob:"]},
    "/api/v1/redoc/": {"style-src": ["'self'", "'unsafe-inline'"], "worker-src": ["'self'", "blob:"]},
}
# Report-Only while trying a stricter policy on a live site: violations are reported, nothing is blocked.
CSP_REPORT_ONLY = env.bool("CSP_REPORT_ONLY", default=False)
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"

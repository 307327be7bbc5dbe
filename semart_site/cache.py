"""The Redis cache, failing soft: with Redis unreachable a read is a miss and a write is dropped.

Everything the site caches can be recomputed (query vectors, first-stage rankings, ICONCLASS expansions) or
may be skipped for a while (API rate counts: the limits open while Redis is down, the pages stay up). So a
Redis outage slows the site down instead of taking it down. Errors are logged at most once per
``QUIET_S`` seconds, and for that long the cache is not asked again, so a dead server costs one connect
timeout per interval, not one per call.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache

logger = logging.getLogger(__name__)

QUIET_S = 2.0


class FailSoftRedisCache(RedisCache):
    _down_until = 0.0

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, error: Exception) -> None:
        if self._available():
            logger.warning("cache unavailable, carrying on without it for %.0f s: %s", QUIET_S, error)
        self._down_until = time.monotonic() + QUIET_S

    def _soft(self, default: Any, method: Any, *args: Any, **kwargs: Any) -> Any:
        if not self._available():
            return default
        try:
            return method(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as error:
            self._failed(error)
            return default

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        return self._soft(default, super().get, key, default, version)

    def get_many(self, keys: Any, version: int | None = None) -> dict[Any, Any]:
        return self._soft({}, super().get_many, keys, version)  # type: ignore[no-any-return]

    def has_key(self, key: Any, version: int | None = None) -> bool:
        return self._soft(False, super().has_key, key, version)  # type: ignore[no-any-return]

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        self._soft(None, super().set, key, value, timeout, version)

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return self._soft(  # type: ignore[no-any-return]
            False, super().add, key, value, timeout, version
        )

    def set_many(
        self, data: dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        return self._soft(  # type: ignore[no-any-return]
            list(data), super().set_many, data, timeout, version
        )

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return self._soft(  # type: ignore[no-any-return]
            False, super().touch, key, timeout, version
        )

    def delete(self, key: Any, version: int | None = None) -> bool:
        return self._soft(False, super().delete, key, version)  # type: ignore[no-any-return]

    def delete_many(self, keys: Any, version: int | None = None) -> None:
        self._soft(None, super().delete_many, keys, version)

"""The Redis cache, failing soft: with Redis unreachable a read is a miss and a write is dropped.

Everything the site caches can be recomputed (query vectors, first-stage rankings, ICONCLASS expansions) or
may be skipped for a while (API rate counts: the limits open while Redis is down, the pages stay up). So a
Redis outage slows the site down instead of taking it down. Errors are logged at most once per
``QUIET_S`` seconds, and for that long the cache is not asked again, so a dead server costs one connect
timeout per interval, not one per call.

One client per process: Django makes a cache backend per thread, and under ASGI each request runs on a
thread of its own, so each request opened a new connection to Redis; and Django makes a ``redis.Redis``
object per call, for which redis-py 8 reads its own package metadata. Together ~1-2 ms of every API request
on the benchmark machine (docs/benchmarks.md). Here the backends of a process share their client, its
connection pool and its Redis objects, and the "down" state.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from functools import cached_property
from typing import Any

import redis
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache, RedisCacheClient

logger = logging.getLogger(__name__)

QUIET_S = 2.0


class SharedRedisCacheClient(RedisCacheClient):
    """Django's client, with one ``redis.Redis`` per connection pool instead of one per call. (It builds on
    Django's private ``_client`` and ``_get_connection_pool``, which django-stubs does not declare.)"""

    _client: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._redis: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        pool = self._get_connection_pool(write)
        client = self._redis.get(id(pool))
        if client is None:
            with self._lock:
                client = self._redis.setdefault(id(pool), self._client(connection_pool=pool))
        return client

    def _get_connection_pool(self, write: bool) -> Any:
        with self._lock:  # two threads must not make two pools for one server
            return super()._get_connection_pool(write)  # type: ignore[misc]


_clients: dict[tuple[Any, ...], SharedRedisCacheClient] = {}
_down_until: dict[tuple[Any, ...], float] = {}
_clients_lock = threading.Lock()


class FailSoftRedisCache(RedisCache):
    _servers: list[str]  # set by RedisCache.__init__
    _options: dict[str, Any]

    @property
    def _identity(self) -> tuple[Any, ...]:
        return (tuple(self._servers), repr(sorted(self._options.items())))

    @cached_property
    def _cache(self) -> SharedRedisCacheClient:
        with _clients_lock:
            client = _clients.get(self._identity)
            if client is None:
                client = _clients[self._identity] = SharedRedisCacheClient(self._servers, **self._options)
        return client

    def _available(self) -> bool:
        return time.monotonic() >= _down_until.get(self._identity, 0.0)

    def _failed(self, error: Exception) -> None:
        if self._available():
            logger.warning("cache unavailable, carrying on without it for %.0f s: %s", QUIET_S, error)
        _down_until[self._identity] = time.monotonic() + QUIET_S

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

    def sliding_log(self, key: str, *, now: float, window_s: float, limit: int) -> float | None:
        """A rate limit's log of request times in one round trip (a sorted set: drop the times older than
        the window, count, add this one, read the oldest). None when the request may go (or Redis is down:
        limits open, as above); else the seconds until the oldest logged request leaves the window. A
        refused request is taken out of the log again, so hammering does not extend the wait. DRF's
        throttle keeps the same log as a pickled list: two round trips and the whole list each request."""
        return self._soft(None, self._sliding_log, key, now, window_s, limit)  # type: ignore[no-any-return]

    def _sliding_log(self, key: str, now: float, window_s: float, limit: int) -> float | None:
        # A key of its own: DRF's throttle kept a pickled list under the plain key, and a sorted-set command
        # on it would fail (WRONGTYPE) until it expired.
        key = self.make_and_validate_key(f"{key}:log")
        member = f"{now:.6f}:{os.urandom(4).hex()}"
        client = self._cache.get_client(key, write=True)
        with client.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now - window_s)
            pipe.zcard(key)
            pipe.zadd(key, {member: now})
            pipe.zrange(key, 0, 0, withscores=True)
            pipe.expire(key, max(1, math.ceil(window_s)))
            _, count, _, oldest, _ = pipe.execute()
        if count < limit:
            return None
        client.zrem(key, member)
        return max(0.0, window_s - (now - float(oldest[0][1]))) if oldest else window_s

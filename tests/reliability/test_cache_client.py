"""The Redis cache (semart_site.cache): one client per process, and the rate limits' sliding log."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.core.cache import cache, caches


def test_every_thread_shares_one_redis_client() -> None:
    seen = []

    def use_cache() -> None:
        caches["default"].get("anything")  # a backend of this thread's own, as Django makes them
        seen.append(caches["default"]._cache.get_client(write=True))

    threads = [threading.Thread(target=use_cache) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    use_cache()
    assert len({id(client) for client in seen}) == 1


def test_the_sliding_log_refuses_past_the_limit_without_counting_refusals() -> None:
    key = f"test-rate-{uuid.uuid4().hex}"
    at = 1_000_000.0
    assert [cache.sliding_log(key, now=at + i, window_s=60, limit=3) for i in range(3)] == [None] * 3
    # The fourth within the minute waits until the first (at t=0) leaves the window: 60 - 5 s.
    assert cache.sliding_log(key, now=at + 5, window_s=60, limit=3) == 55.0
    assert cache.sliding_log(key, now=at + 6, window_s=60, limit=3) == 54.0, "a refusal is not logged"
    assert cache.sliding_log(key, now=at + 60.5, window_s=60, limit=3) is None, "the first has left"
    assert cache.sliding_log(key, now=at + 60.6, window_s=60, limit=3) == pytest.approx(0.4)


def test_the_sliding_log_ignores_a_value_drf_left_under_the_plain_key() -> None:
    key = f"test-rate-{uuid.uuid4().hex}"
    cache.set(key, [1.0, 2.0], 60)  # what DRF's throttle stored before this log
    assert cache.sliding_log(key, now=1_000_000.0, window_s=60, limit=3) is None

"""Redis keys that tie a search request to the work it started: stop flags, result mailboxes, and the
"one search per visitor" rule.

Work on the rerank queue is told to stop through a flag it reads between batches (cheap, and it frees the
worker within a batch); ``revoke`` is sent as well, which drops the task if no worker has picked it up yet.
``revoke(terminate=True)`` is never used: it kills the worker process, not the task.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from typing import Any

import redis
from django.conf import settings
from kombu.exceptions import OperationalError as BrokerError

logger = logging.getLogger(__name__)

KEY_TTL_S = 600
_PREFIX = "semart:search"

# What a search meets when Redis (broker, mailboxes, flags) is down: it then answers without workers.
QUEUE_ERRORS: tuple[type[Exception], ...] = (BrokerError, redis.ConnectionError, redis.TimeoutError)
# After a failure, searches skip the queue this long instead of each paying a failed connect.
QUEUE_QUIET_S = 2.0
_queue_down_until = 0.0


def queue_failed(error: Exception) -> None:
    global _queue_down_until
    if not queue_down():
        logger.warning("task queue unreachable; searches answer without workers for now: %s", error)
    _queue_down_until = time.monotonic() + QUEUE_QUIET_S


def queue_down() -> bool:
    """True shortly after a search found the queue unreachable."""
    return time.monotonic() < _queue_down_until


_clients: dict[str, redis.Redis] = {}


def sync_redis() -> redis.Redis:
    url = settings.REDIS_URL
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=1)
    return client


_loop_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


def _loop_redis() -> Any:
    """An asyncio Redis client for the running event loop, kept for the next searches: a client per wait
    cost a new connection and, in redis-py 8, a read of its own package metadata (~1 ms a rerank). Its pool
    opens a connection per pop waiting at once."""
    import redis.asyncio as aredis

    loop = asyncio.get_running_loop()
    url, client = _loop_clients.get(loop, ("", None))
    if client is None or url != settings.REDIS_URL:  # (tests point the site at another Redis)
        client = aredis.Redis.from_url(settings.REDIS_URL, socket_timeout=None, socket_connect_timeout=1)
        _loop_clients[loop] = (settings.REDIS_URL, client)
    return client


def stop_key(search_id: str) -> str:
    return f"{_PREFIX}:{search_id}:stop"


def mailbox_key(search_id: str) -> str:
    return f"{_PREFIX}:{search_id}:result"


def active_key(request_key: str) -> str:
    return f"{_PREFIX}:active:{request_key}"


def task_ids(search_id: str) -> tuple[str, ...]:
    """Celery task ids a search may have started (its encode and rerank steps)."""
    return (f"{search_id}-encode", f"{search_id}-rerank")


def request_stop(search_id: str) -> None:
    """Tell the search's tasks to stop between batches, and drop them if they are still queued."""
    from semart_site.celery import app

    try:
        sync_redis().set(stop_key(search_id), b"1", ex=KEY_TTL_S)
    except QUEUE_ERRORS as error:  # Redis is down: no worker is running anything to stop either
        queue_failed(error)
        return
    try:
        app.control.revoke(list(task_ids(search_id)))
    except Exception:  # the stop flag already does the job; revoke is a bonus for queued tasks
        logger.warning("could not broadcast revoke for search %s", search_id, exc_info=True)


def stop_requested(search_id: str) -> bool:
    return bool(sync_redis().exists(stop_key(search_id)))


def supersede(*, request_key: str, search_id: str) -> str | None:
    """Make ``search_id`` the visitor's current search; stop the previous one. Returns the previous id."""
    try:
        previous = sync_redis().set(active_key(request_key), search_id.encode(), ex=KEY_TTL_S, get=True)
    except QUEUE_ERRORS as error:
        queue_failed(error)
        return None
    previous_id = previous.decode() if isinstance(previous, bytes) else None
    if previous_id and previous_id != search_id:
        request_stop(previous_id)
    return previous_id


def post_result(mailbox: str, payload: dict[str, Any]) -> None:
    """Worker side: hand a result to the request waiting on ``mailbox`` (or to nobody, until it expires)."""
    client = sync_redis()
    key = mailbox_key(mailbox)
    client.rpush(key, json.dumps(payload))
    client.expire(key, KEY_TTL_S)


async def wait_result(mailbox: str, *, timeout_s: float) -> dict[str, Any] | None:
    """Await a worker's result without blocking the event loop; None after ``timeout_s``.

    A cancelled caller (the client went away) gets CancelledError here at once: BLPOP runs on the loop.
    """
    client = _loop_redis()
    # The pop blocks in Redis for up to timeout_s: the socket has no read timeout of its own (redis-py 8
    # defaults to 5 s), and this bounds it instead, should Redis stop answering.
    answer = await asyncio.wait_for(
        client.blpop([mailbox_key(mailbox)], timeout=max(timeout_s, 0.01)), timeout=timeout_s + 5
    )
    if answer is None:
        return None
    return json.loads(answer[1])  # type: ignore[no-any-return]

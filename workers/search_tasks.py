"""Search work on the ``rerank`` queue: encoding a query and reranking its candidates. Thin: the logic is in
search_app; these load what the request named and post the answer to the request's mailbox.

Callers send them with ``queue=RERANK_QUEUE`` (Celery 5.7 deprecates the ``queue`` task attribute).
Not ``acks_late``: a rerank whose request has timed out is worth nothing, so a lost one is not redone.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from workers.queues import Queue

logger = logging.getLogger(__name__)

RERANK_QUEUE = Queue.RERANK.value


@shared_task(name="search.encode_query", acks_late=False, soft_time_limit=30, time_limit=60)
def search_encode_query(*, text: str, mailbox: str) -> None:
    from search_app.query_encoding import encode_text_here
    from search_app.request_control import post_result

    try:
        _, model_key = encode_text_here(text)
    except Exception as exc:  # the request must hear why instead of waiting for its timeout
        logger.exception("query encoding failed")
        post_result(mailbox, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return
    post_result(mailbox, {"ok": True, "model_key": model_key})


@shared_task(name="search.encode_image", acks_late=False, soft_time_limit=30, time_limit=60)
def search_encode_image(*, digest: str, mailbox: str) -> None:
    """Embed a visitor's uploaded picture (stashed in the cache by the web process under ``digest``)."""
    from search_app.query_encoding import QueryImageMissing, encode_image_here
    from search_app.request_control import post_result

    try:
        _, model_key = encode_image_here(digest)
    except QueryImageMissing:
        post_result(mailbox, {"ok": False, "missing": True, "error": "the uploaded picture has expired"})
        return
    except Exception as exc:  # the request must hear why instead of waiting for its timeout
        logger.exception("query image encoding failed")
        post_result(mailbox, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return
    post_result(mailbox, {"ok": True, "model_key": model_key})


@shared_task(name="search.rerank", acks_late=False, soft_time_limit=60, time_limit=90)
def search_rerank(
    *,
    search_id: str,
    text: str,
    level: str,
    model_key: str,
    candidates: list[dict[str, Any]],
    like_artwork_id: int | None = None,
    like_detail_id: int | None = None,
    like_image: str = "",
) -> None:
    from search_app.reranking import rerank_remote_run

    rerank_remote_run(
        search_id=search_id,
        text=text,
        level=level,
        model_key=model_key,
        candidates=candidates,
        like_artwork_id=like_artwork_id,
        like_detail_id=like_detail_id,
        like_image=like_image,
    )

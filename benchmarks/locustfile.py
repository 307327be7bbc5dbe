"""The load mix of benchmarks/load_test.py: visitors searching, scrolling and opening artworks, and a partner
using the API with a key. Runs inside locust (gevent), in its own process; it never imports Django.

Configured by the environment, which load_test.py sets:
    LOAD_API_KEY        the partner key (Api-Key header)
    LOAD_ARTWORK_IDS    comma-separated ids of processed artworks
    LOAD_QUERIES        path of a queries.jsonl (one {"query": ...} per line)
    LOAD_WAIT           "min,max" think time in seconds between a user's requests (default "0.5,1.5")
    LOAD_QUALITY_OUT    where to write, on exit, the answers that came back degraded (JSON, per request name)

A degraded answer (no rerank in time, no query encoder) is HTTP 200 but a worse ranking: it is not a locust
failure, it is counted apart, by request name, from the JSON ``degraded`` field or the page's notice.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from locust import between, events, task
from locust.contrib.fasthttp import FastHttpUser

API_KEY = os.environ.get("LOAD_API_KEY", "")
ARTWORK_IDS = [int(x) for x in os.environ.get("LOAD_ARTWORK_IDS", "").split(",") if x]
QUERIES = [
    json.loads(line)["query"]
    for line in Path(os.environ.get("LOAD_QUERIES", "/dev/null")).read_text().splitlines()
    if line.strip()
]
_WAIT_MIN, _WAIT_MAX = (float(x) for x in os.environ.get("LOAD_WAIT", "0.5,1.5").split(","))
# The page's notice when the answer comes from the first stage only (templates/search_app/search.html).
DEGRADED_MARK = "message--degraded"

# Per request name: answers checked for quality, and those that came back degraded.
checked: Counter[str] = Counter()
degraded: Counter[str] = Counter()
degraded_reasons: Counter[str] = Counter()


def _count(name: str, reason: str) -> None:
    checked[name] += 1
    if reason:
        degraded[name] += 1
        degraded_reasons[reason] += 1


@events.quitting.add_listener
def _write_quality(environment: Any, **_: Any) -> None:
    out = os.environ.get("LOAD_QUALITY_OUT")
    if out:
        Path(out).write_text(
            json.dumps(
                {
                    "checked": dict(checked),
                    "degraded": dict(degraded),
                    "reasons": dict(degraded_reasons.most_common(10)),
                }
            )
        )


class Visitor(FastHttpUser):
    """One browser (one client cookie, so a new search supersedes its previous one, as on the site) that
    also stands for a partner's share of the traffic. Weights: about half the requests are searches."""

    wait_time = between(_WAIT_MIN, _WAIT_MAX)

    def _query(self) -> tuple[str, str]:
        # Searches for details (regions) as well as whole artworks: both rerank, on different material.
        return random.choice(QUERIES), random.choice(("artworks", "artworks", "details"))

    @task(3)
    def search_page(self) -> None:
        text, level = self._query()
        self.last_search = (text, level)
        params = urlencode({"q": text, "level": level})
        with self.client.get(f"/?{params}", name="page: search", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return
            body = response.text or ""
            _count("page: search", "page notice" if DEGRADED_MARK in body else "")

    @task(2)
    def scroll(self) -> None:
        """The page's infinite scroll: the next page of the visitor's last search (a cached ranking when
        the search ran recently, else the full work)."""
        text, level = getattr(self, "last_search", None) or self._query()
        params = urlencode({"q": text, "level": level, "offset": 24})
        self._json(f"/search.json?{params}", name="json: scroll")

    @task(4)
    def artwork_page(self) -> None:
        pk = random.choice(ARTWORK_IDS)
        with self.client.get(f"/artworks/{pk}/", name="page: artwork", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")

    @task(1)
    def api_list(self) -> None:
        with self.client.get(
            "/api/v1/artworks/?page_size=20", name="api: list", headers=self._auth(), catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return
            following = response.json().get("next")
        if following:  # a partner walks on through the cursor
            path = following.split("://", 1)[-1].partition("/")[2]
            with self.client.get(
                f"/{path}", name="api: list", headers=self._auth(), catch_response=True
            ) as response:
                if response.status_code != 200:
                    response.failure(f"HTTP {response.status_code}")

    @task(2)
    def api_retrieve(self) -> None:
        pk = random.choice(ARTWORK_IDS)
        with self.client.get(
            f"/api/v1/artworks/{pk}/", name="api: retrieve", headers=self._auth(), catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")

    @task(1)
    def api_search(self) -> None:
        text, level = self._query()
        params = urlencode({"q": text, "level": level})
        self._json(f"/api/v1/search/?{params}", name="api: search", headers=self._auth())

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Api-Key {API_KEY}"}

    def _json(self, url: str, *, name: str, headers: dict[str, str] | None = None) -> None:
        with self.client.get(url, name=name, headers=headers or {}, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return
            try:
                body = response.json()
            except ValueError:
                response.failure("not JSON")
                return
            _count(name, str(body.get("degraded") or ""))

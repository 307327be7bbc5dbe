"""Search latency per stage on an instance with art-dev imported, through the path the web uses (encode and
rerank on the rerank queue: a worker must consume it) and in process (the evaluation's path).

    SEMART_DATA_DIR=... DJANGO_SETTINGS_MODULE=semart_site.settings.local \
        .venv/bin/python benchmarks/search_latency.py [--repeat 2] [--index pgvector|faiss]

Prints JSON: median and p95 milliseconds per stage for each path. The first pass over the queries is
"cold" (query vectors not cached), the later ones "warm".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "semart_site.settings.local")


def _summary(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for stage in sorted({k for r in rows for k in r}):
        values = sorted(r[stage] for r in rows if stage in r)
        out[stage] = {
            "median_ms": round(statistics.median(values), 1),
            "p95_ms": round(values[min(len(values) - 1, int(0.95 * len(values)))], 1),
            "n": len(values),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "datasets" / "art-dev")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--index", choices=["pgvector", "faiss"], default=None)
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.core.cache import cache

    from search_app.pipeline import search_sync
    from search_app.types import SearchQuery

    if args.index:
        settings.SEARCH = {**settings.SEARCH, "index": args.index}
    texts = [
        json.loads(line)["query"]
        for line in (args.dataset / "queries.jsonl").read_text().splitlines()
        if line
    ]
    result: dict[str, object] = {
        "queries": len(texts),
        "index": settings.SEARCH["index"],
        "cpu_count": os.cpu_count(),
    }
    for path, in_process in (("web_path_via_rerank_queue", False), ("in_process", True)):
        cache.clear()  # cold: nothing cached
        cold, warm, degraded = [], [], 0
        for round_ in range(args.repeat):
            for text in texts:
                # offset 0 never reads the ranking cache, so every call does the full work
                response = search_sync(SearchQuery(text=text), in_process=in_process)
                degraded += bool(response.degraded)
                (cold if round_ == 0 else warm).append(response.timings_ms)
        result[path] = {"cold": _summary(cold), "warm": _summary(warm), "degraded_answers": degraded}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Pipeline throughput: N art-pool images (read in place) through the real pipeline with 1 and 2 Celery worker
processes; prints JSON with artworks per minute and seconds per stage (mean, p95).

    SEMART_DATA_DIR=var/bench-pipe REDIS_URL=redis://127.0.0.1:6379/5 \
        .venv/bin/python benchmarks/pipeline_throughput.py --images 20 --workers 1 2

Uses its own data folder and Redis database (both emptied of its own artworks first). Each run starts a fresh
``celery worker`` (prefork, consuming io, gpu and cpu): ``artworks_per_minute`` counts from queuing to the
last artwork finished (worker start and model loading included); ``processing_artworks_per_minute`` from the
first stage starting to the last one finishing (model loading on first use still included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "semart_site.settings.local")
os.environ.setdefault("SEMART_DATA_DIR", str(ROOT / "var" / "bench-pipe"))

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from collections_app.models import Artwork, ProcessingStatus, ProcessingStep, Stage  # noqa: E402
from collections_app.services import ArtworkData, artwork_upsert  # noqa: E402
from workers.dispatch import pipeline_enqueue  # noqa: E402

POOL = ROOT.parent / "shared" / "datasets" / "art-pool" / "images"
SOURCE = "bench-pipeline"


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def import_images(n: int, run: str) -> list[int]:
    ids = []
    for path in sorted(POOL.glob("*.jpg"))[:n]:
        result = artwork_upsert(
            data=ArtworkData(source=SOURCE, source_id=f"{run}-{path.stem}"),
            image_bytes=path.read_bytes(),
            image_name=path.name,
            queue_processing=False,
        )
        ids.append(result.artwork.pk)
    return ids


def run_once(n: int, workers: int, timeout_s: float) -> dict[str, object]:
    ids = import_images(n, run=f"w{workers}-{int(time.time())}")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"]}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "semart_site",
            "worker",
            "-Q",
            "io,gpu,cpu",
            "-c",
            str(workers),
            "--pool",
            "prefork",
            "--loglevel",
            "WARNING",
            "-n",
            f"bench{workers}@%h",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        started = time.monotonic()
        pipeline_enqueue(artwork_ids=ids)
        while True:
            done = Artwork.objects.filter(
                pk__in=ids, status__in=[ProcessingStatus.PROCESSED, ProcessingStatus.FAILED]
            )
            if done.count() == len(ids):
                break
            if time.monotonic() - started > timeout_s:
                raise SystemExit(f"timed out with {len(ids) - done.count()} artworks unfinished")
            time.sleep(0.5)
        wall = time.monotonic() - started
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    steps = ProcessingStep.objects.filter(
        artwork_id__in=ids, started_at__isnull=False, finished_at__isnull=False
    )
    per_stage: dict[str, list[float]] = {}
    first_start, last_finish = None, None
    for step in steps:
        assert step.started_at is not None and step.finished_at is not None  # filtered above
        per_stage.setdefault(step.stage, []).append((step.finished_at - step.started_at).total_seconds())
        first_start = min(first_start or step.started_at, step.started_at)
        last_finish = max(last_finish or step.finished_at, step.finished_at)
    # From the first stage starting to the last finishing: leaves out worker start-up before the first task.
    busy = (last_finish - first_start).total_seconds() if first_start and last_finish else None
    failed = Artwork.objects.filter(pk__in=ids, status=ProcessingStatus.FAILED).count()
    details = {
        level: sum(a.details.filter(level=level).count() for a in Artwork.objects.filter(pk__in=ids))
        / len(ids)
        for level in ("entity", "group", "scene")
    }
    return {
        "workers": workers,
        "artworks": len(ids),
        "failed": failed,
        "wall_s": round(wall, 1),
        "artworks_per_minute": round(len(ids) / wall * 60, 2),
        "processing_s": round(busy, 1) if busy else None,
        "processing_artworks_per_minute": round(len(ids) / busy * 60, 2) if busy else None,
        "stage_seconds": {
            stage: {"mean": round(statistics.mean(v), 3), "p95": round(p95(v), 3), "n": len(v)}
            for stage in Stage.values
            if (v := per_stage.get(stage))
        },
        "details_per_artwork": {k: round(v, 1) for k, v in details.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    Artwork.objects.filter(source=SOURCE).delete()
    runs = [run_once(args.images, w, args.timeout) for w in args.workers]
    print(
        json.dumps(
            {
                "benchmark": "pipeline_throughput",
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "gpu": None},
                "models": dict(django.conf.settings.SEMART_MODELS),
                "runs": runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

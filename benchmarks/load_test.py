"""Load test: the site under uvicorn (production settings, DEBUG off) with a rerank-queue worker, driven
from a second process on loopback by locust (benchmarks/locustfile.py: search pages, /search.json scroll
pages, artwork pages, API list/retrieve/search with a key), stepping the number of users up, each step
bounded in time.

    .venv/bin/pip install -e ".[bench]"   # locust
    .venv/bin/python benchmarks/load_test.py [--artworks 60] [--users 1 2 4 8 16 32 64] [--step-s 60]
        [--web-workers 1] [--rerank-workers 1] [--beyond 1]

Prepares (or reuses) an instance under SEMART_DATA_DIR (default var/bench-load) on Redis database 8: a subset
of art-dev imported with its catalogue and processed by a pipeline worker (~3 s an artwork, once), and a
partner key whose rate is raised so the API's throttle (600/minute a key by default) is not what is measured.
Prints JSON: per step, requests/s, p50/p95/p99 per request type, HTTP errors, degraded answers (HTTP 200 but
first-stage only, counted apart), CPU of each process group and the rerank queue's depth; then the sustained
rate (the highest step with p95 < 300 ms over all requests, no errors and no degraded answers) and the same
with the full searches' p95 left out (they take longer than 300 ms on their own here, at any load). Steps
stop ``--beyond`` steps after the first where errors, degraded answers or a slow non-search request appear,
so the run stays bounded.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ART_DEV = ROOT.parent / "shared" / "datasets" / "art-dev"
SOURCE = "bench-load"
P95_TARGET_MS = 300.0
KEY_RATE = "100000/minute"
# Request names (benchmarks/locustfile.py) that run the whole search; the scroll reads a cached ranking.
FULL_SEARCHES = ("page: search", "api: search")
PYTHON = sys.executable
BIN = Path(PYTHON).parent


def instance_env(data_dir: Path, redis_url: str) -> dict[str, str]:
    """Production settings on loopback: DEBUG off, no TLS redirect (no proxy in front)."""
    return {
        **os.environ,
        "SEMART_DATA_DIR": str(data_dir),
        "REDIS_URL": redis_url,
        "DJANGO_SETTINGS_MODULE": "semart_site.settings.production",
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(48),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SECURE_SSL_REDIRECT": "False",
        "DJANGO_LOG_LEVEL": "WARNING",
    }


def start_worker(env: dict[str, str], *, queues: str, concurrency: int, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PYTHON, "-m", "celery", "-A", "semart_site", "worker", "-Q", queues, "-c", str(concurrency)]
        + ["--pool", "prefork", "--loglevel", "WARNING", "-n", f"{name}@%h"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def prepare(env: dict[str, str], data_dir: Path, n: int) -> dict[str, Any]:
    """Import and process ``n`` art-dev artworks (evenly spread over the catalogue) unless already there."""
    from collections_app.models import Artwork, ProcessingStatus

    have = Artwork.objects.filter(source=SOURCE, status=ProcessingStatus.PROCESSED).count()
    seconds = 0.0
    if have < n:
        folder = data_dir / "import"
        (folder / "images").mkdir(parents=True, exist_ok=True)
        with (ART_DEV / "metadata.csv").open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        step = max(1, len(rows) // n)
        chosen = rows[::step][:n]
        with (folder / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(chosen)
        for row in chosen:  # copies: the importer refuses symlinks that lead out of the folder
            copy = folder / row["image_file"]
            if not copy.exists():
                shutil.copyfile(ART_DEV / row["image_file"], copy)
        worker = start_worker(env, queues="io,gpu,cpu", concurrency=1, name="load-pipeline")
        started = time.monotonic()
        try:
            subprocess.run(
                [PYTHON, "manage.py", "import_images", str(folder / "images")]
                + ["--catalog", str(folder / "metadata.csv"), "--source", SOURCE]
                + ["--process", "--wait", "--timeout", str(30 * n + 300), "--no-progress"],
                cwd=ROOT,
                env=env,
                check=True,
                stdout=sys.stderr,
            )
        finally:
            stop(worker)
        seconds = time.monotonic() - started
    artworks = Artwork.objects.filter(source=SOURCE, status=ProcessingStatus.PROCESSED)
    return {
        "artworks": artworks.count(),
        "details": sum(a.details.count() for a in artworks),
        "import_and_process_s": round(seconds, 1) if seconds else "reused",
        "ids": list(artworks.values_list("pk", flat=True)),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_web(env: dict[str, str], port: int, workers: int) -> subprocess.Popen[bytes]:
    web = subprocess.Popen(
        [PYTHON, "-m", "uvicorn", "semart_site.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
        + ["--workers", str(workers), "--lifespan", "off", "--no-access-log", "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=sys.stderr,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if web.poll() is not None:
            raise SystemExit("uvicorn exited while starting")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                if response.status == 200:
                    return web
        except OSError:
            time.sleep(0.5)
    stop(web)
    raise SystemExit("uvicorn did not answer in 90 s")


def warm_up(base: str, queries: list[str]) -> dict[str, Any]:
    """Every query once at each level, one at a time: models loaded in the worker, query vectors cached
    (a site's popular queries are), rankings cached for the scroll's first minutes."""
    started, degraded = time.monotonic(), 0
    for text in queries:
        for level in ("artworks", "details"):
            params = urllib.parse.urlencode({"q": text, "level": level})
            with urllib.request.urlopen(f"{base}/search.json?{params}", timeout=60) as response:
                degraded += bool(json.load(response).get("degraded"))
    return {
        "searches": 2 * len(queries),
        "seconds": round(time.monotonic() - started, 1),
        "degraded": degraded,
    }


class Sampler(threading.Thread):
    """Once a second: CPU of each process group (100 = one core busy), the rerank queue's depth in the broker,
    and the database's open connections."""

    def __init__(self, groups: dict[str, list[int]], redis_url: str) -> None:
        super().__init__(daemon=True)
        import psutil
        import redis

        self.psutil = psutil
        self.redis = redis.Redis.from_url(redis_url)
        self.groups = groups
        self.done = threading.Event()
        self.cpu: dict[str, list[float]] = {g: [] for g in groups}
        self.machine_cpu: list[float] = []
        self.queue: list[int] = []
        self.connections: list[int] = []
        self.refused = 0  # samples that could not connect to PostgreSQL

    def _processes(self, pids: list[int]) -> list[Any]:
        found = []
        for pid in pids:
            try:
                parent = self.psutil.Process(pid)
                found += [parent, *parent.children(recursive=True)]
            except self.psutil.NoSuchProcess:
                continue
        return found

    def _cpu_seconds(self) -> dict[str, float]:
        totals = {}
        for group, pids in self.groups.items():
            total = 0.0
            for process in self._processes(pids):
                try:
                    times = process.cpu_times()
                    total += times.user + times.system
                except self.psutil.NoSuchProcess:
                    continue
            totals[group] = total
        return totals

    def run(self) -> None:
        before, last = self._cpu_seconds(), time.monotonic()
        self.psutil.cpu_percent()
        while not self.done.wait(1.0):
            now_cpu, now = self._cpu_seconds(), time.monotonic()
            for group in self.groups:
                # Processes that ended (a finished locust child) only lower a group's total: clamp at 0.
                self.cpu[group].append(max(0.0, (now_cpu[group] - before[group]) / (now - last) * 100))
            before, last = now_cpu, now
            self.machine_cpu.append(self.psutil.cpu_percent() * self.psutil.cpu_count())
            self.queue.append(int(self.redis.llen("rerank")))
            if (backends := self._client_backends()) is not None:
                self.connections.append(backends)
        from django.db import connection

        connection.close()

    def _client_backends(self) -> int | None:
        from django.db import DatabaseError, connection

        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
                row = cursor.fetchone()
        except DatabaseError:  # e.g. "too many clients": the server is full, which is what we look for
            self.refused += 1
            connection.close()
            return None
        return int(row[0]) - 1 if row else 0  # less this sampler's own

    def summary(self) -> dict[str, Any]:
        def mean(values: list[float]) -> float:
            return round(sum(values) / len(values), 1) if values else 0.0

        return {
            "cpu_percent_mean": {g: mean(v) for g, v in self.cpu.items()}
            | {"machine_all_processes": mean(self.machine_cpu)},
            "rerank_queue_depth_max": max(self.queue, default=0),
            "postgres_client_connections_max": max(self.connections, default=0),
            "postgres_samples_refused": self.refused,
        }


def read_stats(prefix: Path) -> dict[str, Any]:
    per_type: dict[str, Any] = {}
    total: dict[str, Any] = {}
    with Path(f"{prefix}_stats.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            figures = {
                "requests": int(row["Request Count"]),
                "errors": int(row["Failure Count"]),
                "rps": round(float(row["Requests/s"]), 2),
                "p50_ms": float(row["50%"]),
                "p95_ms": float(row["95%"]),
                "p99_ms": float(row["99%"]),
                "max_ms": round(float(row["Max Response Time"])),
            }
            if row["Name"] == "Aggregated":
                total = figures
            else:
                per_type[row["Name"]] = figures
    errors: dict[str, int] = {}
    with Path(f"{prefix}_failures.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            key = f"{row['Name']}: {row['Error']}"[:160]
            errors[key] = errors.get(key, 0) + int(row["Occurrences"])
    return {"total": total, "per_type": per_type, "error_messages": errors}


def run_step(
    *,
    users: int,
    seconds: int,
    base: str,
    out: Path,
    load_env: dict[str, str],
    groups: dict[str, list[int]],
    redis_url: str,
) -> dict[str, Any]:
    prefix = out / f"users-{users}"
    quality = out / f"users-{users}-quality.json"
    locust = subprocess.Popen(
        [str(BIN / "locust"), "-f", str(ROOT / "benchmarks" / "locustfile.py"), "--headless"]
        + ["-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--host", base]
        + ["--csv", str(prefix), "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "15"],
        cwd=ROOT,
        env={**load_env, "LOAD_QUALITY_OUT": str(quality)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    sampler = Sampler({**groups, "locust": [locust.pid]}, redis_url)
    sampler.start()
    _, stderr = locust.communicate(timeout=seconds + 120)
    sampler.done.set()
    sampler.join()
    if not Path(f"{prefix}_stats.csv").exists():
        raise SystemExit(f"locust wrote no statistics: {stderr.decode(errors='replace')[-2000:]}")
    stats = read_stats(prefix)
    answers = json.loads(quality.read_text()) if quality.exists() else {}
    degraded = sum(answers.get("degraded", {}).values())
    total = stats["total"]
    clean = total["errors"] == 0 and degraded == 0
    return {
        "users": users,
        "seconds": seconds,
        "rps": total["rps"],
        "requests": total["requests"],
        "errors": total["errors"],
        "degraded_answers": degraded,
        "searches_checked": sum(answers.get("checked", {}).values()),
        "p50_ms": total["p50_ms"],
        "p95_ms": total["p95_ms"],
        "p99_ms": total["p99_ms"],
        "meets_target": total["p95_ms"] < P95_TARGET_MS and clean,
        # Full searches (encode, candidates, rerank) cost more than the target on their own on this machine;
        # this says whether everything else still holds it, and the searches do not fail or degrade.
        "meets_target_except_full_searches": clean
        and all(
            figures["p95_ms"] < P95_TARGET_MS
            for name, figures in stats["per_type"].items()
            if name not in FULL_SEARCHES
        ),
        "per_type": stats["per_type"],
        "error_messages": stats["error_messages"],
        "degraded_reasons": answers.get("reasons", {}),
        **sampler.summary(),
    }


def postmaster_pid(data_dir: Path) -> list[int]:
    pid_file = data_dir / "postgres" / "postmaster.pid"
    try:
        return [int(pid_file.read_text().split()[0])]
    except (OSError, ValueError, IndexError):
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("SEMART_DATA_DIR", "var/bench-load"))
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/8")
    parser.add_argument("--artworks", type=int, default=60)
    parser.add_argument("--users", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--step-s", type=int, default=60)
    parser.add_argument("--beyond", type=int, default=1, help="Steps to run after the first that misses.")
    parser.add_argument("--web-workers", type=int, default=1, help="uvicorn worker processes.")
    parser.add_argument("--rerank-workers", type=int, default=1, help="Celery processes on the rerank queue.")
    parser.add_argument(
        "--wait", default="0.5,1.5", help="Think time min,max seconds between a user's requests."
    )
    parser.add_argument("--no-warm-up", action="store_true")
    args = parser.parse_args()

    data_dir = (ROOT / args.data_dir).resolve() if not args.data_dir.is_absolute() else args.data_dir
    env = instance_env(data_dir, args.redis_url)
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.cache import cache
    from django.core.management import call_command

    from search_app.api.services import api_key_create

    load_before = os.getloadavg()
    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)  # whitenoise serves them, as in production
    instance = prepare(env, data_dir, args.artworks)
    _, raw_key = api_key_create(name=f"load test {int(time.time())}", scopes=["read"], rate=KEY_RATE)
    cache.clear()  # a run starts without cached rankings or vectors: the warm-up fills them
    from django.db import connections

    connections.close_all()

    queries = [
        json.loads(line)["query"] for line in (ART_DEV / "queries.jsonl").read_text().splitlines() if line
    ]
    out = data_dir / "locust" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    rerank = start_worker(env, queues="rerank", concurrency=args.rerank_workers, name="load-rerank")
    web = None
    try:
        web = start_web(env, port, args.web_workers)
        warm = None if args.no_warm_up else warm_up(base, queries)
        print(f"warm-up: {warm}", file=sys.stderr)
        groups = {"web": [web.pid], "rerank_worker": [rerank.pid], "postgres": postmaster_pid(data_dir)}
        load_env = {
            **os.environ,
            "LOAD_API_KEY": raw_key,
            "LOAD_ARTWORK_IDS": ",".join(str(pk) for pk in instance["ids"]),
            "LOAD_QUERIES": str(ART_DEV / "queries.jsonl"),
            "LOAD_WAIT": args.wait,
        }
        steps: list[dict[str, Any]] = []
        missed = 0
        for users in args.users:
            step = run_step(
                users=users,
                seconds=args.step_s,
                base=base,
                out=out,
                load_env=load_env,
                groups=groups,
                redis_url=args.redis_url,
            )
            step["load_average_1m_after"] = round(os.getloadavg()[0], 2)
            steps.append(step)
            print(
                f"users {users}: {step['rps']} req/s, p95 {step['p95_ms']} ms, errors {step['errors']}, "
                f"degraded {step['degraded_answers']}",
                file=sys.stderr,
            )
            if not step["meets_target_except_full_searches"]:
                missed += 1
                if missed > args.beyond:
                    break
    finally:
        stop(web)
        stop(rerank)

    def best(key: str) -> dict[str, Any] | None:
        passing = [s for s in steps if s[key]]
        if not passing:
            return None
        top = max(passing, key=lambda s: s["rps"])
        searches = {n: top["per_type"][n]["p95_ms"] for n in FULL_SEARCHES if n in top["per_type"]}
        return {"users": top["users"], "rps": top["rps"], "p95_ms": top["p95_ms"], "search_p95_ms": searches}

    instance.pop("ids")
    print(
        json.dumps(
            {
                "benchmark": "load_test",
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "load_average_before": [round(x, 2) for x in load_before],
                },
                "setup": {
                    "settings": env["DJANGO_SETTINGS_MODULE"],
                    "web": f"uvicorn, {args.web_workers} worker process(es), 127.0.0.1",
                    "rerank_workers": args.rerank_workers,
                    "api_key_rate": f"{KEY_RATE} (raised from the 600/minute default)",
                    "think_time_s": args.wait,
                    "step_s": args.step_s,
                    "models": dict(django.conf.settings.SEMART_MODELS),
                    "warm_up": warm,
                    "csv": str(out),
                },
                "instance": instance,
                "target": {"p95_ms_below": P95_TARGET_MS, "errors": 0, "degraded_answers": 0},
                "sustained": best("meets_target"),
                "sustained_except_full_searches": best("meets_target_except_full_searches"),
                "steps": steps,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

"""python manage.py demo [IMAGES_DIR] [--catalog CSV] [--port 8000] [--no-serve] [--workers 1]

The README's demo in one process: migrate, make an admin, import the demo images, start a Celery worker and
the web server as children, wait for processing with progress, then serve until Ctrl-C stops everything.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from collections_app.importers.base import ImportItem, ImportReport, run_import
from collections_app.importers.catalogue import CatalogueError
from collections_app.importers.folder import plan_folder_import
from collections_app.importers.remote import FetchRefused
from collections_app.importers.waiting import WaitOutcome, wait_for_processing
from semart_site.embedded import forget_exited_handles
from workers.queues import ALL_QUEUES

DEMO_POOL = Path(settings.BASE_DIR).parent / "shared" / "datasets" / "art-pool" / "images"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"
STOP_GRACE_S = 20.0


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class Child:
    """A child process with its output in a log file under the data folder."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], log_dir: Path) -> None:
        self.name, self.log_path = name, log_dir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("ab")
        # A session of its own: Ctrl-C in the terminal reaches only the demo, which stops children in order.
        self.process = subprocess.Popen(
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)  # celery: warm shutdown; uvicorn: graceful
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Command(BaseCommand):
    help = (
        "Run the demo: set up the database, import and process the demo images with a real Celery worker, "
        "and serve the site on http://127.0.0.1:PORT until Ctrl-C."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("images", nargs="?", type=Path, help=f"Folder of images (default: {DEMO_POOL}).")
        parser.add_argument("--catalog", "--catalogue", type=Path, default=None, help="CSV catalogue.")
        parser.add_argument("--source", default="demo")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=1, help="Celery worker concurrency.")
        parser.add_argument(
            "--no-serve", action="store_true", help="Stop once the demo images are processed."
        )
        parser.add_argument("--timeout", type=float, default=3600.0, help="Longest wait for processing (s).")
        parser.add_argument("--sample-size", type=int, default=24, help="Artworks to fetch from AIC.")

    def handle(self, *args: Any, **options: Any) -> None:
        data_dir = Path(settings.SEMART_DATA_DIR)
        log_dir = data_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        if not options["no_serve"]:
            self._check_port_free(options["host"], options["port"])

        self.stdout.write(f"Data folder: {data_dir}")
        self.stdout.write("Migrating the database...")
        call_command("migrate", interactive=False, verbosity=0)
        self._ensure_admin(data_dir)
        items, notes = self._demo_items(options)

        redis_handle, env = self._broker(data_dir)
        children: list[Child] = []
        # A plain kill (SIGTERM) must stop the children too: they live in sessions of their own.
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        # And Ctrl-C, even when started by a process that ignores SIGINT (Python then keeps it ignored).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            children.append(
                Child(
                    "worker",
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "semart_site",
                        "worker",
                        "-Q",
                        ",".join(ALL_QUEUES),
                        "--concurrency",
                        str(options["workers"]),
                        "--loglevel",
                        "INFO",
                    ],  # fmt: skip
                    env=env,
                    log_dir=log_dir,
                )
            )
            self.stdout.write(
                f"Celery worker started (pid {children[-1].process.pid}, log: {children[-1].log_path})."
            )
            for note in notes:
                self.stderr.write(self.style.WARNING(f"warning: {note}"))
            report = run_import(items, total=len(items), process=True, stream=sys.stderr, label="importing")
            self.stdout.write(f"Import: {report.summary()}.")
            for error in report.errors[:20]:
                self.stderr.write(self.style.WARNING(f"skipped: {error}"))
            if report.imported == 0:
                raise CommandError("None of the demo images could be imported.")
            if report.fatal:
                raise CommandError(report.fatal)

            if not options["no_serve"]:
                children.append(
                    Child(
                        "web",
                        [
                            sys.executable,
                            "-m",
                            "uvicorn",
                            "semart_site.asgi:application",
                            "--host",
                            options["host"],
                            "--port",
                            str(options["port"]),
                        ],  # fmt: skip
                        env=env,
                        log_dir=log_dir,
                    )
                )
                self._announce(options, children[-1])

            outcome = self._wait(report, children, timeout_s=options["timeout"])
            if options["no_serve"]:
                if outcome.timed_out:
                    raise CommandError(
                        f"{outcome.unfinished} artwork(s) still unprocessed after {options['timeout']} s."
                    )
                if outcome.failed:
                    raise CommandError(f"{len(outcome.failed)} artwork(s) failed processing.")
                self.stdout.write(self.style.SUCCESS("Demo collection processed."))
                return
            self._serve(children)
        except KeyboardInterrupt:
            self.stdout.write("Interrupted: stopping the web server and the worker...")
        finally:
            for child in reversed(children):
                child.stop()
            if redis_handle is not None:
                redis_handle.shutdown()
            # With the embedded PostgreSQL (no DATABASE_URL), it stops when this command exits.
            forget_exited_handles(Path(settings.SEMART_DATA_DIR))

    # --- steps ---------------------------------------------------------------------------------------

    def _check_port_free(self, host: str, port: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise CommandError(
                    f"Port {port} on {host} is in use ({exc.strerror}); pick another with --port."
                ) from exc

    def _ensure_admin(self, data_dir: Path) -> None:
        from django.contrib.auth import get_user_model

        user_model = get_user_model()
        credentials = data_dir / "demo-admin.txt"
        if user_model.objects.filter(is_superuser=True).exists():
            where = f" (demo credentials in {credentials})" if credentials.exists() else ""
            self.stdout.write(f"An admin user exists{where}.")
            return
        password = secrets.token_urlsafe(12)
        user_model.objects.create_superuser(username="admin", email="", password=password)
        credentials.write_text(f"username: admin\npassword: {password}\n")
        credentials.chmod(0o600)
        self.stdout.write(
            self.style.SUCCESS(f"Created the demo admin: admin / {password} (saved in {credentials})")
        )

    def _demo_items(self, options: dict[str, Any]) -> tuple[list[ImportItem], list[str]]:
        folder: Path | None = options["images"]
        if folder is None and DEMO_POOL.is_dir():
            folder = DEMO_POOL
        if folder is not None:
            self.stdout.write(f"Demo images: {folder}")
            try:
                plan = plan_folder_import(
                    folder, catalog=options["catalog"], source=options["source"], include_uncatalogued=True
                )
            except CatalogueError as exc:
                raise CommandError(str(exc)) from exc
            if not plan.items:
                raise CommandError(f"No images found in {folder}.")
            return plan.items, plan.notes

        from collections_app.importers.aic import plan_aic_sample

        self.stdout.write(
            "No image folder here: fetching a public-domain sample from the Art Institute of Chicago..."
        )
        try:
            items = plan_aic_sample(limit=options["sample_size"])
        except FetchRefused as exc:
            raise CommandError(
                f"No demo images: no folder was given, {DEMO_POOL} does not exist, and the Art Institute of "
                f"Chicago's API could not be reached ({exc}). Pass a folder: manage.py demo PATH/TO/IMAGES"
            ) from exc
        if not items:
            raise CommandError("The Art Institute of Chicago's API returned no artworks with images.")
        return items, []

    def _broker(self, data_dir: Path) -> tuple[Any, dict[str, str]]:
        """The broker the children use: the configured one, a local Redis, or an embedded redis-server."""
        from semart_site.celery import app
        from semart_site.embedded import redis_answers, start_embedded_redis

        env = {
            **os.environ,
            "SEMART_DATA_DIR": str(data_dir),
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE") or settings.SETTINGS_MODULE,
        }
        handle = None
        if os.environ.get("REDIS_URL") or os.environ.get("CELERY_BROKER_URL"):
            url = os.environ.get("CELERY_BROKER_URL") or os.environ["REDIS_URL"]
            self.stdout.write(f"Broker: {url} (from the environment)")
        elif redis_answers(LOCAL_REDIS):
            url = LOCAL_REDIS
            env["REDIS_URL"] = url
            self.stdout.write(f"Broker: the Redis answering on {url}")
        else:
            handle, url = start_embedded_redis(data_dir)
            env["REDIS_URL"] = url
            self.stdout.write(f"Broker: no Redis answered, started the embedded one at {url}")
        # This process queues the pipeline too, and its settings were read before the broker was chosen.
        kombu_url = "redis+socket://" + url.removeprefix("unix://") if url.startswith("unix://") else url
        app.conf.broker_url = kombu_url
        app.conf.result_backend = kombu_url
        return handle, env

    def _announce(self, options: dict[str, Any], web: Child) -> None:
        base = f"http://{options['host']}:{options['port']}"
        self.stdout.write(self.style.SUCCESS(f"Semart is starting at {base}/  (admin: {base}/admin/)"))
        self.stdout.write(
            f"Web server started (pid {web.process.pid}, log: {web.log_path}). Ctrl-C stops everything."
        )

    def _wait(self, report: ImportReport, children: list[Child], *, timeout_s: float) -> WaitOutcome:
        from tqdm import tqdm

        ids = report.artwork_ids
        bar = tqdm(total=len(ids), desc="processing", unit="artwork", file=sys.stderr)

        def show(done: int, failed: int) -> None:
            dead = [c for c in children if not c.alive()]
            if dead:
                raise CommandError(f"The {dead[0].name} process stopped:\n{dead[0].tail()}")
            bar.n = done
            bar.set_postfix(failed=failed)
            bar.refresh()

        try:
            outcome = wait_for_processing(artwork_ids=ids, timeout_s=timeout_s, poll_s=2.0, on_progress=show)
        finally:
            bar.close()
        self.stdout.write(
            f"Processing: {outcome.processed} processed, {len(outcome.failed)} failed, "
            f"{outcome.unfinished} unfinished."
        )
        for failure in outcome.failed[:20]:
            self.stderr.write(self.style.WARNING(f"processing failed: {failure}"))
        if outcome.timed_out:
            self.stderr.write(
                self.style.WARNING("Still processing; the worker carries on in the background.")
            )
        return outcome

    def _serve(self, children: list[Child]) -> None:
        self.stdout.write(self.style.SUCCESS("Serving. Press Ctrl-C to stop."))
        try:
            while all(child.alive() for child in children):
                time.sleep(1.0)
        except KeyboardInterrupt:
            self.stdout.write("Stopping the web server and the worker...")
            return
        dead = next(child for child in children if not child.alive())
        raise CommandError(f"The {dead.name} process stopped:\n{dead.tail()}")

"""A real Celery worker in a thread of the test process, like ``celery.contrib.testing.worker.start_worker``
but with a deadline on its start.

Celery's helper waits for the worker's "consumer ready" signal with no timeout: a worker that never gets
there (seen once in CI, on the Redis broker, and not since) hangs the whole suite until CI kills it. Here
the start is awaited for ``start_timeout_s``; a worker that misses it has its thread's stack written to the
test's output (so the cause is on record), is stopped, and a fresh one is started, once. A second miss
fails the test with that stack.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from celery import Celery
from celery.contrib.testing.worker import TestWorkController, setup_app_for_worker
from celery.result import _set_task_join_will_block
from celery.utils.nodenames import anon_nodename
from celery.worker import state

START_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 10.0


def _stack_of(thread: threading.Thread) -> str:
    frame = sys._current_frames().get(thread.ident or -1)
    return "".join(traceback.format_stack(frame)) if frame is not None else "(thread has ended)"


def _stop(worker: TestWorkController, thread: threading.Thread) -> None:
    state.should_terminate = 0
    worker.stop(in_sighandler=False)
    thread.join(SHUTDOWN_TIMEOUT_S)
    state.should_terminate = None


@contextmanager
def worker_thread(
    app: Celery, *, queues: Sequence[str], start_timeout_s: float = START_TIMEOUT_S, attempts: int = 2
) -> Iterator[TestWorkController]:
    """Yield a started solo worker consuming ``queues``; stop it (within SHUTDOWN_TIMEOUT_S) on exit."""
    setup_app_for_worker(app, "WARNING", None)  # type: ignore[arg-type]  # celery's hint says str, None is its default
    stacks: list[str] = []
    for _ in range(attempts):
        worker = TestWorkController(
            app=app,
            concurrency=1,
            hostname=anon_nodename(),
            pool="solo",
            loglevel="WARNING",
            logfile=None,
            ready_callback=None,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            queues=list(queues),
        )
        thread = threading.Thread(target=worker.start, daemon=True, name="celery-test-worker")
        thread.start()
        if worker._on_started.wait(start_timeout_s):
            break
        stacks.append(_stack_of(thread))
        print(
            f"celery test worker not started after {start_timeout_s} s; its thread was at:\n{stacks[-1]}",
            file=sys.stderr,
        )
        _stop(worker, thread)
    else:
        raise RuntimeError(
            f"the Celery test worker did not start in {attempts} tries of {start_timeout_s} s; last stack:\n"
            + stacks[-1]
        )
    _set_task_join_will_block(False)
    try:
        yield worker
    finally:
        state.should_terminate = 0
        thread.join(SHUTDOWN_TIMEOUT_S)
        alive = thread.is_alive()
        state.should_terminate = None
        if alive:
            raise RuntimeError(f"the Celery test worker did not stop within {SHUTDOWN_TIMEOUT_S} s")

"""Running pipeline stages in a test as their Celery tasks do, without Celery."""

from __future__ import annotations

from typing import Any

from workers.pipeline.state import step_begin, step_finish


def run_stage(artwork_id: int, stage: str, service: Any, *, force: bool = False) -> str:
    """One stage as its task runs it: begun, done, its version recorded."""
    step_begin(artwork_id=artwork_id, stage=stage)
    version = service(artwork_id=artwork_id, force=force)
    step_finish(artwork_id=artwork_id, stage=stage, model_version=version)
    return str(version)

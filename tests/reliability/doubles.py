"""Test doubles for the fault tests, each standing in where the test is about something else than the model
(a connection dying mid-stage): the picture's regions do not matter there, the timing does."""

from __future__ import annotations

import threading
from typing import Any

from tests.workers.fakes import FakeFixedDetector
from workers.inference.base import Region


class FakeGatedDetector(FakeFixedDetector):
    """Its first ``detect`` signals ``entered`` and waits for ``release``, so a test can break something
    while a stage is known to be mid-run (holding its row lock and its database connection)."""

    key = "fake-gated-detector"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def _detect(self, image: Any) -> list[Region]:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            if not self.release.wait(timeout=60):
                raise TimeoutError("the test never released the detector")
        return super()._detect(image)

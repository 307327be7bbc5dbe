"""Test doubles for the fault tests, each standing in only where the test is about something else: a
connection dying mid-stage (the regions do not matter there, the timing does), or a full disk where no
tmpfs can be mounted."""

from __future__ import annotations

import errno
import threading
from typing import Any

from semart_site.storage import AtomicFileSystemStorage
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


class FakeFullDiskStorage(AtomicFileSystemStorage):
    """Storage on a disk with ``free_bytes`` left: a save that does not fit raises ENOSPC, as the kernel
    would. Used only where a tiny tmpfs cannot be mounted (not root); the test is about what the site does
    with the error, not about the filesystem."""

    free_bytes = 0

    def _save(self, name: str, content: Any) -> str:
        size = content.size if hasattr(content, "size") else len(content.read())
        if size > type(self).free_bytes:
            raise OSError(errno.ENOSPC, "No space left on device", self.path(name))
        type(self).free_bytes -= size
        return super()._save(name, content)

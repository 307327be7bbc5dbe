"""Data that lives as long as the process, kept out of the garbage collector's full passes.

CPython's full collection walks every container object alive. With the ICONCLASS package's data loaded
(~280k objects) a web process's full passes took 35-200 ms each, in whichever thread happened to allocate
then: a search caught by one waited that long (docs/benchmarks.md). A loader of such data calls
``settle()`` once it is loaded: ``gc.freeze()`` moves every object alive into a generation the collector
never walks. The price: a reference cycle alive at that moment (another request's, say) is never freed,
once per load.
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()


def settle() -> None:
    """Free the young garbage (the loader's scratch), then freeze what is alive."""
    with _lock:
        gc.collect(1)
        gc.freeze()

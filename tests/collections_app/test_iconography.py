"""ICONCLASS from the package, read from several threads at once (the web's requests and the search legs)."""

from __future__ import annotations

import gc
import threading

import iconclass

from collections_app import iconography


def test_a_language_is_read_only_once_it_is_complete(monkeypatch) -> None:
    """The package marks a language loaded before it has read the keywords: a second thread asking then
    got ``KeyError``. Here it waits for the load instead."""
    ic = iconography._iconclass.__wrapped__()  # a fresh object, nothing loaded yet
    reading_keywords, go_on = threading.Event(), threading.Event()

    class SlowZipFile(iconclass.ZipFile):  # type: ignore[misc]
        def read(self, name, *args, **kwargs):  # type: ignore[no-untyped-def]
            if name.startswith("kw_"):
                reading_keywords.set()
                go_on.wait(10)
            return super().read(name, *args, **kwargs)

    monkeypatch.setattr(iconclass, "ZipFile", SlowZipFile)
    loader = threading.Thread(target=ic.load, args=("de",))
    loader.start()
    assert reading_keywords.wait(10)  # the texts are read, the keywords not yet
    threading.Timer(0.2, go_on.set).start()
    assert ic.kw("11H", "de") == ["Heiliger"]
    assert ic.txt("11H", "de")
    loader.join(10)


def test_the_loaded_system_is_kept_out_of_the_collectors_full_passes() -> None:
    """~280k objects that live as long as the process: walking them made every full collection of a web
    process take 35-200 ms, stalling whichever search it caught."""
    gc.unfreeze()
    ic = iconography._iconclass.__wrapped__()
    assert gc.get_freeze_count() > 100_000
    ic.txt("11H", "de")  # a language loaded later is frozen too
    assert not [o for o in gc.get_objects() if o is ic.keywords["de"]]  # out of the collector's generations

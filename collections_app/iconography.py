"""ICONCLASS, from the CC0 ``iconclass`` package: validate notations and read their texts offline.

The package fetches a Wikidata label over the network for notations carrying ``(wd:Q...)``; we never
call that path (no network at run time), and read the plain text instead.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass

from django.core.exceptions import ValidationError

from semart_site.long_lived import settle

LANGUAGES = ("en", "de", "fr", "it", "pt", "jp")
_WIKIDATA = re.compile(r"\(wd:Q[0-9]+\)")


@dataclass(frozen=True)
class Subject:
    notation: str
    text: str
    keywords: tuple[str, ...]
    path: tuple[str, ...]


@functools.cache
def _iconclass():  # type: ignore[no-untyped-def]
    import iconclass

    class Iconclass(iconclass.Iconclass):  # type: ignore[misc]
        """The package's loader marks a language as loaded (``texts[language] = {}``) before reading it, so
        a second thread asking meanwhile found half the texts and no keywords (``KeyError: 'en'``, seen with
        the search legs on threads). Here a language loads under a lock and shows once it is complete."""

        _lock = threading.Lock()

        def load(self, language: str) -> None:
            with self._lock:
                if language in self.texts:
                    return
                loaded = iconclass.Iconclass.__new__(iconclass.Iconclass)
                loaded.texts, loaded.keywords = {}, {}
                iconclass.Iconclass.load(loaded, language)
                self.keywords[language] = loaded.keywords[language]
                self.texts[language] = loaded.texts[language]
            settle()

    ic = Iconclass()
    settle()  # the whole system, ~280k objects, never garbage
    return ic


def normalise_notation(notation: str) -> str:
    return re.sub(r"\s+", " ", notation.strip())


def is_valid_notation(notation: str) -> bool:
    notation = normalise_notation(notation)
    if not notation or _WIKIDATA.search(notation):
        return False
    try:
        _iconclass().obj(notation)
    except Exception:  # the package raises NotationNotFound, KeyError or TypeError on odd input
        return False
    return True


def validate_notations(notations: list[str]) -> None:
    bad = [n for n in notations if not is_valid_notation(n)]
    if bad:
        raise ValidationError(
            "Unknown ICONCLASS notation(s): %(bad)s", params={"bad": ", ".join(bad)}, code="iconclass"
        )


def subject(notation: str, language: str = "en") -> Subject | None:
    """The notation's text, keywords and path from the root; None when the notation is unknown."""
    notation = normalise_notation(notation)
    if not is_valid_notation(notation):
        return None
    ic = _iconclass()
    obj = ic.obj(notation)
    return Subject(
        notation=notation,
        text=ic.txt(notation, language),
        keywords=tuple(ic.kw(notation, language)),
        path=tuple(p for p in obj.get("p", []) if p and p != notation),
    )


def split_notations(value: str) -> list[str]:
    """Catalogues separate notations with ';' or '|' (commas occur inside bracketed names)."""
    return [normalise_notation(part) for part in re.split(r"[;|\n]", value or "") if part.strip()]

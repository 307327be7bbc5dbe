"""ICONCLASS text -> notations: a scan over the package's English texts and keywords, loaded once per process.

About 43,000 notations (with their keywords) fit in a few MB and scan in milliseconds, so an in-process list
beats a database table that would have to be kept in step with the package's releases.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from collections_app.iconography import _iconclass, subject

_WORD = re.compile(r"[\w']+")


@dataclass(frozen=True)
class _Entry:
    notation: str
    haystack: str  # lower-cased text and keywords
    words: frozenset[str]


@functools.cache
def _index() -> tuple[_Entry, ...]:
    ic = _iconclass()
    ic.txt("0", "en")  # loads the English texts and keywords
    entries = []
    for notation, text in ic.texts["en"].items():
        if "(...)" in notation:  # templates for named saints etc.: not a notation anyone catalogues
            continue
        keywords = ic.keywords["en"].get(notation, [])
        haystack = " | ".join([text, *keywords]).lower()
        entries.append(_Entry(notation, haystack, frozenset(_WORD.findall(haystack))))
    return tuple(entries)


def iconclass_search(*, text: str, limit: int = 20) -> list[str]:
    """Notations whose text or keywords contain every word of ``text``.

    Whole-word matches rank above prefix matches ("lion" before "lioness"), and shorter, more general
    notations first: a search for "Jerome" should offer 11H(JEROME) before its hundred sub-notations.
    """
    terms = [t for t in _WORD.findall(text.lower()) if t]
    if not terms:
        return []
    scored: list[tuple[int, int, str]] = []
    for entry in _index():
        if not all(t in entry.haystack for t in terms):
            continue
        whole = sum(1 for t in terms if t in entry.words)
        scored.append((-whole, len(entry.notation), entry.notation))
    scored.sort()
    found: list[str] = []
    for _, _, notation in scored:
        if subject(notation) is not None:  # the texts file also holds a few keys that are not notations
            found.append(notation)
        if len(found) >= limit:
            break
    return found

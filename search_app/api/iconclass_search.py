"""ICONCLASS text -> notations: a scan over the package's English texts and keywords, loaded once per process.

About 43,000 notations (with their keywords) fit in a few MB and scan in milliseconds, so an in-process list
beats a database table that would have to be kept in step with the package's releases.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from collections_app.iconography import _iconclass, subject
from semart_site.long_lived import settle

_WORD = re.compile(r"[\w']+")
_STOPWORDS = frozenset(
    ["an", "and", "as", "at", "by", "for", "from", "in", "into", "is", "of", "on", "or", "the", "to", "with"]
)


@dataclass(frozen=True)
class _Entry:
    notation: str
    haystack: str  # lower-cased text and keywords
    words: frozenset[str]


@dataclass(frozen=True)
class _Index:
    entries: tuple[_Entry, ...]
    text: str  # every haystack, one per line, so one C-speed regex scan finds the candidates
    starts: tuple[int, ...]  # where each entry's line starts in ``text``


@functools.cache
def _index() -> _Index:
    ic = _iconclass()
    ic.txt("0", "en")  # loads the English texts and keywords
    entries = []
    for notation, text in ic.texts["en"].items():
        if "(...)" in notation:  # templates for named saints etc.: not a notation anyone catalogues
            continue
        keywords = ic.keywords["en"].get(notation, [])
        haystack = " | ".join([text, *keywords]).lower().replace("\n", " ")
        entries.append(_Entry(notation, haystack, frozenset(_WORD.findall(haystack))))
    starts, pos = [], 0
    for entry in entries:
        starts.append(pos)
        pos += len(entry.haystack) + 1
    index = _Index(tuple(entries), "\n".join(e.haystack for e in entries), tuple(starts))
    settle()  # ~40k entries, each with its word set: kept for the process's life
    return index


def iconclass_search(*, text: str, limit: int = 20) -> list[str]:
    """Notations whose text or keywords contain every word of ``text``.

    Whole-word matches rank above prefix matches ("lion" before "lioness"), and shorter, more general
    notations first: a search for "Jerome" should offer 11H(JEROME) before its hundred sub-notations.
    """
    # Words that occur in almost every text select nothing and make every query a full scan.
    terms = [t for t in _WORD.findall(text.lower()) if len(t) > 1 and t not in _STOPWORDS]
    if not terms:
        return []
    index = _index()
    # The longest term is usually the rarest: find its lines in one scan, then check the others there.
    # A very short one ("a", "ox") occurs on most lines, where mapping each occurrence costs more than a scan.
    rarest = max(terms, key=len)
    if len(rarest) >= 4:
        hits: Iterable[int] = {
            bisect.bisect_right(index.starts, m.start()) - 1
            for m in re.finditer(re.escape(rarest), index.text)
        }
    else:
        hits = range(len(index.entries))
    scored: list[tuple[int, int, str]] = []
    for i in hits:
        entry = index.entries[i]
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

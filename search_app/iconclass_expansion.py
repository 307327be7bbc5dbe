"""Query -> ICONCLASS notations present in the catalogue, by their texts and keywords in every language the
``iconclass`` package has.

ICONCLASS texts list a subject's attributes ("Jerome; possible attributes: book, cardinal's hat, lion"),
so a query that names attributes finds the subject even when no title does. Words are weighted by how rare
they are among the catalogue's notations: "saint" says little, "lion" a lot.
"""

from __future__ import annotations

import functools
import math
import re
import time
import unicodedata
from collections import Counter

from django.core.cache import cache
from django.db import connection

from collections_app.iconography import LANGUAGES, subject

_CACHE_KEY = "semart:search:catalogue-notations"
_CACHE_TTL_S = 300
_LOCAL_TTL_S = 30.0
MIN_SCORE = 0.3
MAX_NOTATIONS = 8
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "the",
        "of",
        "in",
        "on",
        "with",
        "his",
        "her",
        "their",
        "its",
        "by",
        "to",
        "at",
        "from",
        "for",
        "or",
        "as",
        "is",
        "are",
        "be",
        "who",
        "which",
        "into",
        # ICONCLASS boilerplate, and words every saint's text shares
        "possible",
        "attributes",
        "attribute",
        "etc",
        "e",
        "g",
        "st",
        "saint",
        "saints",
        "holy",
    ]
)
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def tokens(text: str) -> list[str]:
    """Lower-case words without accents, with a plural 's' removed, without stop words."""
    plain = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    out = []
    for word in _WORD.findall(plain.replace("'s ", " ")):
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        if len(word) > 1 and word not in _STOPWORDS:
            out.append(word)
    return out


_local: tuple[float, list[str]] = (-1e18, [])


def catalogue_notations() -> list[str]:
    """Every notation used by an artwork or a detail (cached a few minutes: new tags appear soon enough),
    and held in the process for ``_LOCAL_TTL_S`` (reading it from Redis was ~0.7 ms of every search)."""
    global _local
    read_at, notations = _local
    if time.monotonic() - read_at < _LOCAL_TTL_S:
        return list(notations)
    cached = cache.get(_CACHE_KEY)
    if cached is not None:
        _local = (time.monotonic(), list(cached))
        return list(cached)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT n FROM (SELECT unnest(iconclass) AS n FROM collections_app_artwork "
            "UNION SELECT unnest(iconclass) FROM collections_app_detail) s ORDER BY n"
        )
        notations = [row[0] for row in cursor.fetchall()]
    cache.set(_CACHE_KEY, notations, _CACHE_TTL_S)
    _local = (time.monotonic(), list(notations))
    return notations


def forget_catalogue_notations() -> None:
    global _local
    _local = (-1e18, [])
    cache.delete(_CACHE_KEY)


@functools.lru_cache(maxsize=20_000)
def notation_text(notation: str) -> str:
    found = subject(notation, "en")
    return found.text if found else ""


@functools.lru_cache(maxsize=20_000)
def notation_words(notation: str) -> frozenset[str]:
    """Words of the notation's texts and keywords in all languages, and of its named ancestors
    (the text of "11H(JEROME)" describes every "11H(JEROME)3 ...")."""
    found = subject(notation, "en")
    if found is None:
        return frozenset()
    related = [notation] + [p for p in found.path if "(" in p and not p.endswith("(...)")]
    words: set[str] = set()
    for code in related:
        for language in LANGUAGES:
            s = subject(code, language)
            if s is None:
                continue
            words.update(tokens(s.text))
            for keyword in s.keywords:
                words.update(tokens(keyword))
    return frozenset(words)


def catalogue_notation_texts() -> tuple[list[str], list[str]]:
    """(notations, English texts) of the catalogue, for the lexical leg's documents."""
    notations = catalogue_notations()
    return notations, [notation_text(n) for n in notations]


def expand_query(text: str, notations: list[str] | None = None) -> list[tuple[str, float]]:
    """Notations whose words cover the query's rare words, best first, with a score in (0, 1]."""
    query_words = list(dict.fromkeys(tokens(text)))
    if not query_words:
        return []
    notations = catalogue_notations() if notations is None else notations
    docs = {n: notation_words(n) for n in notations}
    docs = {n: w for n, w in docs.items() if w}
    if not docs:
        return []
    frequency: Counter[str] = Counter()
    for words in docs.values():
        frequency.update(words)
    total = len(docs)
    # Query words no notation knows ("camel", "hair") carry no evidence either way.
    idf = {w: math.log(1 + total / frequency[w]) for w in query_words if frequency[w]}
    if not idf:
        return []
    norm = sum(idf.values())
    scored = []
    for notation, words in docs.items():
        score = sum(weight for word, weight in idf.items() if word in words) / norm
        if score >= MIN_SCORE:
            scored.append((notation, round(score, 6)))
    scored.sort(key=lambda item: (-item[1], item[0]))
    if not scored:
        return []
    best = scored[0][1]
    return [(n, s) for n, s in scored if s >= 0.6 * best][:MAX_NOTATIONS]

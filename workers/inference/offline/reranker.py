"""OfflineReranker ("offline-details"): no cross-encoder weights ship in any package, so the offline
second stage combines evidence the first stage only saw separately, per candidate:

- regions: the query vector against *every* stored vector of the candidate (whole image, each detail's
  crop and caption), best match and mean of the top three (the first stage saw only the single best row
  that made it into its LIMIT);
- words: how many of the query's words the candidate's labels, captions, title and ICONCLASS texts contain;
- the lexical and ICONCLASS legs' scores.

No model is loaded: the vectors come from the database. Scores are in [0, 1].
"""

from __future__ import annotations

import functools
import re
import unicodedata

import numpy as np

from workers.inference.base import RerankCandidate, Reranker

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_STOP = frozenset(
    ["a", "an", "and", "the", "of", "in", "on", "with", "his", "her", "their", "its", "by", "to"]
    + ["at", "from", "for", "or", "as", "is", "are"]
)


@functools.lru_cache(maxsize=65536)
def _words(text: str) -> frozenset[str]:
    """The words of a text, folded (accents, plurals, stop words). Cached: captions repeat across searches."""
    plain = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(c for c in plain if not unicodedata.combining(c)).replace("_", " ")
    out = set()
    for w in _WORD.findall(plain):
        if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        if len(w) > 1 and w not in _STOP:
            out.add(w)
    return frozenset(out)


class OfflineReranker(Reranker):
    key = "offline-details"
    version = "1"
    batch_size = 8

    # Weights of the evidence; cosine similarities of the offline embedder sit mostly in [0, 0.6].
    weights = {"regions": 0.55, "words": 0.2, "lexical": 0.1, "iconclass": 0.15}
    cosine_floor = 0.0
    cosine_span = 0.6

    def _load(self) -> None:  # nothing to load: every input comes with the candidates
        return None

    def _region_score(self, candidate: RerankCandidate, query_vector: np.ndarray | None) -> float:
        if query_vector is None or candidate.region_vectors is None or not len(candidate.region_vectors):
            return 0.0
        sims = np.sort(candidate.region_vectors @ np.asarray(query_vector, dtype=np.float32))[::-1]
        combined = 0.5 * float(sims[0]) + 0.5 * float(sims[:3].mean())
        return float(np.clip((combined - self.cosine_floor) / self.cosine_span, 0.0, 1.0))

    @staticmethod
    def _word_score(query_words: frozenset[str], candidate: RerankCandidate) -> float:
        if not query_words:
            return 0.0
        regions: frozenset[str] = (
            frozenset().union(*(_words(t) for t in candidate.region_texts))
            if candidate.region_texts
            else frozenset()
        )
        found = regions | _words(candidate.text)
        # A word seen in a region counts fully, one only in the artwork's texts a little less.
        hits = sum(1.0 if w in regions else 0.75 for w in query_words if w in found)
        return hits / len(query_words)

    def _score(
        self, query: str, batch: list[RerankCandidate], *, query_vector: np.ndarray | None
    ) -> list[float]:
        query_words = _words(query)
        w = self.weights
        scores = []
        for cand in batch:
            evidence = cand.evidence
            lexical = min(
                1.0, float(evidence.get("lexical", 0.0)) * 5.0
            )  # ts_rank_cd of a good match ~0.1-0.3
            iconclass = float(evidence.get("iconclass", 0.0))
            parts = {
                "regions": self._region_score(cand, query_vector),
                "words": self._word_score(query_words, cand),
                "lexical": lexical,
                "iconclass": iconclass,
            }
            active = {k: v for k, v in w.items() if not (k == "regions" and query_vector is None)}
            total = sum(active.values())
            scores.append(float(sum(active[k] * parts[k] for k in active) / total))
        return scores

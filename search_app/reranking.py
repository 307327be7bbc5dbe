"""The second stage, as run by a worker of the ``rerank`` queue (or in process by the evaluation command).

It gathers what the reranker needs for each candidate (texts, the vectors of its whole image and of its
details), scores in batches while checking the request's stop flag, and picks the best region.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from collections_app.models import Artwork, ArtworkEmbedding, Detail, DetailEmbedding
from search_app.iconclass_expansion import notation_text
from search_app.retrieval import detail_levels, halfvec_rows
from workers.inference.base import RerankCandidate, Reranker

logger = logging.getLogger(__name__)


def _vectors(rows: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack(rows).astype(np.float32, copy=False)


@dataclass
class Regions:
    """For each candidate, the detail id behind every row of its ``region_vectors`` (None for the whole
    image); and each detail's label and confidence."""

    ids: dict[str, list[int | None]] = field(default_factory=dict)
    labels: dict[int, tuple[str, float]] = field(default_factory=dict)


def build_rerank_candidates(
    *, candidates: Sequence[dict[str, Any]], model_key: str, level: str
) -> tuple[list[RerankCandidate], Regions]:
    """RerankCandidates for the given ``[{"artwork_id", "first_stage", "legs"}]``, and their regions."""
    ids = [int(c["artwork_id"]) for c in candidates]
    artworks = {a.pk: a for a in Artwork.objects.filter(pk__in=ids).prefetch_related("artists")}
    levels = list(detail_levels(level))
    details: dict[int, list[Detail]] = defaultdict(list)
    for d in (
        Detail.objects.visible()
        .filter(artwork_id__in=ids, level__in=levels)
        .only("id", "artwork_id", "label", "caption", "confidence")
        .order_by("artwork_id", "id")
    ):
        details[d.artwork_id].append(d)
    region_rows: dict[int, list[tuple[int | None, np.ndarray]]] = defaultdict(list)
    if level == "artworks":
        whole = ArtworkEmbedding.objects.filter(artwork_id__in=ids, model_key=model_key, kind="image")
        for artwork_id, vector in halfvec_rows(whole, "artwork_id"):
            region_rows[artwork_id].append((None, vector))
    regions = DetailEmbedding.objects.filter(
        artwork_id__in=ids, model_key=model_key, level__in=levels
    ).exclude(detail__review_state="hidden")
    for artwork_id, detail_id, vector in halfvec_rows(regions, "artwork_id", "detail_id"):
        region_rows[artwork_id].append((detail_id, vector))

    out: list[RerankCandidate] = []
    regions_out = Regions()
    for cand in candidates:
        artwork = artworks.get(int(cand["artwork_id"]))
        if artwork is None:  # deleted since the first stage
            continue
        own = details.get(artwork.pk, [])
        texts = [artwork.title, artwork.artist_names, artwork.description]
        texts += [notation_text(n) for n in artwork.iconclass]
        region_texts = [" ".join(filter(None, [d.label.replace("_", " "), d.caption])) for d in own]
        rows = region_rows.get(artwork.pk, [])
        key = str(artwork.pk)
        regions_out.ids[key] = [detail_id for detail_id, _ in rows]
        regions_out.labels.update({d.pk: (d.label, float(d.confidence)) for d in own})
        out.append(
            RerankCandidate(
                id=key,
                text=" ".join(t for t in texts if t),
                image_path=artwork.working_image.name or artwork.image.name or None,
                region_vectors=_vectors([r for _, r in rows]) if rows else None,
                region_texts=region_texts,
                first_stage_score=float(cand.get("first_stage", 0.0)),
                evidence={k: float(v) for k, v in (cand.get("legs") or {}).items()},
            )
        )
    return out, regions_out


_ARTICLE = re.compile(r"^(the|a|an)\s+", re.IGNORECASE)


# British spellings a label may carry in American ("sceptre" / "scepter", "mitre" / "miter"), and the
# possessive ("Christ's hand"): both the query and the label are read this way.
_BRITISH_RE = re.compile(r"(?<=[bcdfghklmnpstvz])re\b")
_POSSESSIVE = re.compile(r"['\u2019]s\b")
_LINKING_WORDS = frozenset({"the", "a", "an", "of", "and", "with", "in", "on", "at", "to", "by", "for"})


def _spelled(text: str) -> str:
    return _BRITISH_RE.sub("er", _POSSESSIVE.sub("", text.replace("_", " ").lower()))


@functools.lru_cache(maxsize=4096)
def _label_pattern(label: str) -> re.Pattern[str] | None:
    words = _ARTICLE.sub("", _spelled(label).strip())
    if not words:
        return None
    return re.compile(r"\b" + r"\s+".join(map(re.escape, words.split())) + r"(?:s|es)?\b")


def _mentions(query: str, label: str) -> re.Match[str] | None:
    """Where the query names the label, as a word or phrase, singular or plural ("clouds" names "cloud",
    "the infant Christ Child" names "the Christ Child")."""
    pattern = _label_pattern(label)
    return pattern.search(_spelled(query)) if pattern is not None else None


def _word(word: str) -> str:
    """A plural's singular, roughly ("halos", "crosses", "churches", "ladies")."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes")):
        return word[:-2]
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


@functools.lru_cache(maxsize=4096)
def _content_words(text: str) -> frozenset[str]:
    return frozenset(_word(w) for w in re.findall(r"[a-z]+", _spelled(text)) if w not in _LINKING_WORDS)


def route_label(query: str, labels: Sequence[str]) -> str | None:
    """The region label a query asks for, when it names one: the first named, except that a name followed
    at once by another is a modifier of it ("angel wings" asks for wings: English compounds end in their
    head); and a label of several words the query holds in another order ("Christ's hand raised in
    blessing" names "blessing hand of Christ") when it says more than the phrases named. None when the
    query names no label."""
    query = _spelled(query)
    found = sorted(
        ((m.start(), m.end(), label) for label in set(labels) if label and (m := _mentions(query, label))),
        key=lambda t: (t[0], -t[1]),
    )
    asked = _content_words(query)
    held = [label for label in set(labels) if label and len(_content_words(label)) > 1
            and _content_words(label) <= asked]  # fmt: skip
    most = max((len(_content_words(label)) for _, _, label in found), default=0)
    fuller = [label for label in held if len(_content_words(label)) > most]
    if fuller:
        return min(fuller, key=lambda label: (-len(_content_words(label)), label))
    if not found:
        return None
    start, end, label = found[0]
    for other_start, other_end, other in found[1:]:
        if other_start < end:
            continue  # inside the mention taken ("child" inside "Christ Child")
        if query[end:other_start].strip():
            break
        end, label = other_end, other  # the compound's head replaces its modifier
    return label


def named_detail(query: str, details: Sequence[tuple[int, str, float]]) -> int | None:
    """Of an artwork's ``(detail id, label, confidence)``, the most confident detail with the label the
    query names (``route_label``; ties to the lower id); None when the query names none of them."""
    wanted = route_label(query, [label for _, label, _ in details]) if query else None
    if wanted is None:
        return None
    return max((d for d in details if d[1] == wanted), key=lambda d: (d[2], -d[0]))[0]


def named_placement(
    query: str, placements: Sequence[tuple[str, tuple[float, float, float, float]]]
) -> tuple[str, tuple[float, float, float, float]] | None:
    """Of an artwork's placements ``(label, box)``, the one whose label the query names (``route_label``);
    None when it names none."""
    wanted = route_label(query, [label for label, _ in placements]) if query else None
    return next((p for p in placements if p[0] == wanted), None) if wanted is not None else None


def best_regions(
    candidates: Sequence[RerankCandidate],
    regions: Regions,
    query_vector: np.ndarray | None,
    *,
    query_text: str = "",
) -> dict[str, int]:
    """For each candidate, the region to show. When the query names a label the candidate's details
    carry ("a golden halo around a saint's head" names "halo" and "saint"; route_label picks "halo"), the
    most confident detail with that label: the detector placed it on such a thing (for the offline
    detector, the localiser's probability). Otherwise the detail whose vector is closest to the query
    (whole-image rows skipped)."""
    best: dict[str, int] = {}
    for cand in candidates:
        ids = regions.ids.get(cand.id, [])
        labelled = [
            (i, *regions.labels[i]) for i in dict.fromkeys(ids) if i is not None and i in regions.labels
        ]
        named = named_detail(query_text, labelled)
        if named is not None:
            best[cand.id] = named
            continue
        if query_vector is None:
            continue
        if cand.region_vectors is None or not any(i is not None for i in ids):
            continue
        sims = cand.region_vectors @ np.asarray(query_vector, dtype=np.float32)
        order = np.argsort(-sims)
        for index in order:
            if ids[int(index)] is not None:
                best[cand.id] = int(ids[int(index)])  # type: ignore[arg-type]
                break
    return best


def rerank_run(
    *,
    text: str,
    query_vector: np.ndarray | None,
    model_key: str,
    level: str,
    candidates: Sequence[dict[str, Any]],
    reranker: Reranker,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Scores and best regions: ``{"scores": {artwork_id: s}, "regions": {artwork_id: detail_id}}``.
    Raises StopRequested when ``should_stop`` turns true between batches."""
    rerank_candidates, regions = build_rerank_candidates(
        candidates=candidates, model_key=model_key, level=level
    )
    scores = reranker.score(text, rerank_candidates, query_vector=query_vector, should_stop=should_stop)
    return {
        "scores": {c.id: float(s) for c, s in zip(rerank_candidates, scores, strict=True)},
        "regions": best_regions(rerank_candidates, regions, query_vector, query_text=text),
        "reranker": reranker.model_key,
    }


def query_vector_here(
    *,
    text: str,
    model_key: str,
    like_artwork_id: int | None = None,
    like_detail_id: int | None = None,
    like_image: str = "",
) -> np.ndarray | None:
    """The query's vector in a worker or command: the reference image's stored vector, an uploaded
    picture's (raises QueryImageMissing when it has left the cache), else the text's."""
    from search_app.query_encoding import encode_image_here, encode_text_here
    from search_app.retrieval import reference_vectors

    if not model_key:  # the web side has no embedder either: rerank on words and evidence alone
        return None
    if like_image:
        vector, worker_key = encode_image_here(like_image)
        if worker_key != model_key:
            logger.warning("worker embeds with %s but the candidates came from %s", worker_key, model_key)
            return None
        return vector
    if like_artwork_id is not None or like_detail_id is not None:
        return reference_vectors(
            model_key=model_key, like_artwork_id=like_artwork_id, like_detail_id=like_detail_id
        )
    if not text:
        return None
    vector, worker_key = encode_text_here(text)
    if worker_key != model_key:
        logger.warning("rerank worker embeds with %s but the candidates came from %s", worker_key, model_key)
        return None
    return vector


def rerank_remote_run(
    *,
    search_id: str,
    text: str,
    level: str,
    model_key: str,
    candidates: Sequence[dict[str, Any]],
    like_artwork_id: int | None = None,
    like_detail_id: int | None = None,
    like_image: str = "",
) -> None:
    """The rerank task's body: score, then post the answer to the request's mailbox. Stops between
    batches once the request has gone (client disconnected, or a newer search from the same visitor)."""
    from search_app import request_control
    from workers.inference.base import StopRequested
    from workers.inference.registry import get_reranker

    mailbox = request_control.task_ids(search_id)[1]
    if request_control.stop_requested(search_id):
        return
    try:
        result = rerank_run(
            text=text,
            query_vector=query_vector_here(
                text=text,
                model_key=model_key,
                like_artwork_id=like_artwork_id,
                like_detail_id=like_detail_id,
                like_image=like_image,
            ),
            model_key=model_key,
            level=level,
            candidates=candidates,
            reranker=get_reranker(),
            should_stop=lambda: request_control.stop_requested(search_id),
        )
    except StopRequested:
        logger.info("rerank %s stopped: its request has gone or was superseded", search_id)
        # A superseded request may still be waiting: let it answer with the first stage now.
        request_control.post_result(mailbox, {"ok": False, "error": "stopped: request superseded or gone"})
        return
    except Exception as exc:  # the request degrades to the first stage at once instead of at its timeout
        logger.exception("rerank %s failed", search_id)
        request_control.post_result(mailbox, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return
    request_control.post_result(mailbox, {"ok": True, **result})

"""Stage 6: a caption for every detail, then the detail embeddings: the crop through the image encoder and the
caption through the text encoder, in batches, tagged with the embedder's model_key."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from collections_app.models import Detail, DetailEmbedding, DetailLevel, EmbeddingKind, ReviewState, Stage
from workers.inference.base import CaptionRequest
from workers.inference.registry import get_captioner, get_embedder
from workers.pipeline.composition import article, spoken
from workers.pipeline.embed import vector_index_ensure
from workers.pipeline.state import artwork_lock, step_version, working_image_open

BATCH = 32
RELATION_WORDS = {
    "holding": "holding",
    "left_of": "left of",
    "right_of": "right of",
    "above": "above",
    "below": "below",
    "next_to": "next to",
    "facing": "facing",
}
# Said first when several relations hold between the same pair: "holding" says more than "left of".
RELATION_ORDER = ("holding", "facing", "next_to", "left_of", "right_of", "above", "below")
CONTEXT_RELATIONS = 2


def caption_context(detail: Detail) -> str:
    """A sentence from the detail's label and its relations: "an angel holding a lily, left of a dove"."""
    subject = (
        article(detail.label)
        if detail.label
        else ("a scene" if detail.level == DetailLevel.SCENE else "a detail")
    )
    if detail.level == DetailLevel.SCENE and detail.label:
        label = spoken(detail.label)
        subject = f"a scene with {label}" if label != "the whole picture" else "the whole picture"
    by_object: dict[Any, list[str]] = {}
    for r in detail.relations:
        if r.get("relation") in RELATION_WORDS and r.get("object_label"):
            by_object.setdefault((r.get("object"), r["object_label"]), []).append(r["relation"])
    phrases = []
    for (_obj, label), relations in by_object.items():
        best = min(relations, key=lambda r: RELATION_ORDER.index(r) if r in RELATION_ORDER else 99)
        phrases.append((RELATION_ORDER.index(best), f"{RELATION_WORDS[best]} {article(label)}"))
    phrases.sort(key=lambda p: p[0])
    # "next to a halo, next to a halo" says nothing twice: one phrase per wording.
    distinct = list(dict.fromkeys(phrase for _, phrase in phrases))
    text = subject
    for i, phrase in enumerate(distinct[:CONTEXT_RELATIONS]):
        text += (" " if i == 0 and phrase.startswith("holding") else ", ") + phrase
    return text


def _captioner_part(version: str) -> str:
    return dict(p.split("=", 1) for p in version.split(";") if "=" in p).get("captioner", "")


def stage_captions(*, artwork_id: int, force: bool = False) -> str:
    captioner, embedder = get_captioner(), get_embedder()
    version = f"captioner={captioner.model_key};embedder={embedder.model_key}"
    with transaction.atomic():
        artwork = artwork_lock(artwork_id)
        if not force and step_version(artwork_id, Stage.CAPTIONS) == version:
            return version
        details = list(Detail.objects.filter(artwork_id=artwork_id).exclude(review_state=ReviewState.HIDDEN))
        image = None
        # Captions: redo them when the captioner changed or on force; a caption a cataloger wrote stays.
        recaption_all = (
            force or _captioner_part(step_version(artwork_id, Stage.CAPTIONS)) != captioner.model_key
        )
        to_caption = [
            d
            for d in details
            if d.review_state == ReviewState.UNREVIEWED and (recaption_all or not d.caption)
        ]
        if to_caption:
            image = working_image_open(artwork)
            requests = [
                CaptionRequest(box=d.box, label=d.label, level=d.level, context=caption_context(d))
                for d in to_caption
            ]
            captions = captioner.caption(image, requests)
            for d, request, text in zip(to_caption, requests, captions, strict=True):
                d.caption = (text or request.context).strip()
            Detail.objects.bulk_update(to_caption, ["caption"])
            # A new caption makes this model's text vector of it stale.
            DetailEmbedding.objects.filter(
                detail__in=to_caption, model_key=embedder.model_key, kind=EmbeddingKind.TEXT
            ).delete()
        key = embedder.model_key
        if force:
            DetailEmbedding.objects.filter(artwork_id=artwork_id, model_key=key).delete()
        have = set(
            DetailEmbedding.objects.filter(artwork_id=artwork_id, model_key=key).values_list(
                "detail_id", "kind"
            )
        )
        need_image = [d for d in details if (d.pk, EmbeddingKind.IMAGE) not in have]
        need_text = [d for d in details if (d.pk, EmbeddingKind.TEXT) not in have and d.caption]
        rows: list[DetailEmbedding] = []
        if need_image:
            image = image or working_image_open(artwork)
            for start in range(0, len(need_image), BATCH):
                batch = need_image[start : start + BATCH]
                vectors = embedder.embed_regions(image, [d.box for d in batch])
                rows += [_row(d, key, EmbeddingKind.IMAGE, v) for d, v in zip(batch, vectors, strict=True)]
        for start in range(0, len(need_text), BATCH):
            batch = need_text[start : start + BATCH]
            vectors = embedder.embed_texts([d.caption for d in batch])
            rows += [_row(d, key, EmbeddingKind.TEXT, v) for d, v in zip(batch, vectors, strict=True)]
        DetailEmbedding.objects.bulk_create(rows)
    for kind in {r.kind for r in rows}:
        vector_index_ensure(target="detail", model_key=key, kind=kind, dim=int(rows[0].dim))
    return version


def _row(detail: Detail, key: str, kind: str, vector: Any) -> DetailEmbedding:
    return DetailEmbedding(
        detail=detail,
        artwork_id=detail.artwork_id,
        level=detail.level,
        model_key=key,
        kind=kind,
        dim=int(vector.shape[0]),
        vector=vector,
    )

"""Stage 4: groups of entities that belong together, with their spatial relations kept as data."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from collections_app.models import Detail, DetailLevel, ReviewState, Stage
from workers.pipeline.composition import Cluster, Item, group_entities
from workers.pipeline.state import artwork_lock, invalidate_stages, step_version

GROUPS_KEY = "spatial-groups@1"


def detail_item(detail: Detail) -> Item:
    facing = next((r.get("direction", "") for r in detail.relations if r.get("relation") == "faces"), "")
    return Item(
        key=detail.pk, box=detail.box, label=detail.label, confidence=detail.confidence, facing=facing
    )


def relations_for(
    subject: int, triples: list[dict[str, Any]], labels: dict[int, str], scope: str
) -> list[dict[str, Any]]:
    return [
        {
            "relation": t["relation"],
            "object": t["object"],
            "object_label": labels.get(t["object"], ""),
            "scope": scope,
        }
        for t in triples
        if t["subject"] == subject
    ]


def details_from_clusters(
    *, artwork_id: int, clusters: list[Cluster], level: str, model_key: str
) -> list[Detail]:
    """Create one Detail per cluster and link its members to it through ``parents``."""
    details = Detail.objects.bulk_create(
        [
            Detail(
                artwork_id=artwork_id,
                level=level,
                x=c.box[0],
                y=c.box[1],
                w=c.box[2],
                h=c.box[3],
                label=c.label[:300],
                confidence=min(max(c.confidence, 0.0), 1.0),
                model_key=model_key,
            )
            for c in clusters
        ]
    )
    through = Detail.parents.through
    through.objects.bulk_create(
        [
            through(from_detail_id=member, to_detail_id=d.pk)
            for d, c in zip(details, clusters, strict=True)
            for member in c.members
        ]
    )
    return details


def stage_groups(*, artwork_id: int, force: bool = False) -> str:
    with transaction.atomic():
        artwork_lock(artwork_id)
        if not force and step_version(artwork_id, Stage.GROUPS) == GROUPS_KEY:
            return GROUPS_KEY
        entities = list(
            Detail.objects.filter(artwork_id=artwork_id, level=DetailLevel.ENTITY).exclude(
                review_state=ReviewState.HIDDEN
            )
        )
        Detail.objects.filter(
            artwork_id=artwork_id,
            level__in=[DetailLevel.GROUP, DetailLevel.SCENE],
            review_state=ReviewState.UNREVIEWED,
        ).delete()
        clusters = group_entities([detail_item(e) for e in entities])
        details_from_clusters(
            artwork_id=artwork_id, clusters=clusters, level=DetailLevel.GROUP, model_key=GROUPS_KEY
        )
        labels = {e.pk: e.label for e in entities}
        in_group = {member: c for c in clusters for member in c.members}
        for entity in entities:
            kept = [r for r in entity.relations if r.get("scope") not in ("group", "scene")]
            cluster = in_group.get(entity.pk)
            entity.relations = kept + (
                relations_for(entity.pk, cluster.relations, labels, "group") if cluster else []
            )
        Detail.objects.bulk_update(entities, ["relations"])
        invalidate_stages(artwork_id, [Stage.SCENES, Stage.CAPTIONS])
    return GROUPS_KEY

"""Stage 5: scenes, the larger parts of the composition, made of groups (and entities in no group)."""

from __future__ import annotations

from django.db import transaction

from collections_app.models import Detail, DetailLevel, ReviewState, Stage
from workers.pipeline.composition import Cluster, Item, relation_triples, scene_clusters
from workers.pipeline.groups import detail_item, details_from_clusters, relations_for
from workers.pipeline.state import artwork_lock, invalidate_stages, step_version

SCENES_KEY = "spatial-scenes@1"
WHOLE_PICTURE = "the whole picture"


def stage_scenes(*, artwork_id: int, force: bool = False) -> str:
    with transaction.atomic():
        artwork_lock(artwork_id)
        if not force and step_version(artwork_id, Stage.SCENES) == SCENES_KEY:
            return SCENES_KEY
        visible = Detail.objects.filter(artwork_id=artwork_id).exclude(review_state=ReviewState.HIDDEN)
        groups = list(visible.filter(level=DetailLevel.GROUP))
        loose = list(visible.filter(level=DetailLevel.ENTITY, parents__isnull=True))
        Detail.objects.filter(
            artwork_id=artwork_id, level=DetailLevel.SCENE, review_state=ReviewState.UNREVIEWED
        ).delete()
        units = groups + loose
        items = [detail_item(u) for u in units]
        clusters = scene_clusters(items)
        if not clusters:
            # Nothing detected: the picture itself is the one scene, so it can still be captioned and found.
            clusters = [Cluster(members=[], box=(0.0, 0.0, 1.0, 1.0), label=WHOLE_PICTURE, confidence=0.0)]
        scenes = details_from_clusters(
            artwork_id=artwork_id, clusters=clusters, level=DetailLevel.SCENE, model_key=SCENES_KEY
        )
        labels = {u.pk: u.label for u in units}
        in_scene = {member: c for c in clusters for member in c.members}
        for unit in units:
            kept = [r for r in unit.relations if r.get("scope") != "scene"]
            cluster = in_scene.get(unit.pk)
            unit.relations = kept + (
                relations_for(unit.pk, cluster.relations, labels, "scene") if cluster else []
            )
        Detail.objects.bulk_update(units, ["relations"])
        # Scenes relate to each other too ("a scene left of another"), for compositions with several.
        scene_items = [Item(key=s.pk, box=s.box, label=s.label, confidence=s.confidence) for s in scenes]
        triples = relation_triples(scene_items, holding=False)
        scene_labels = {s.pk: s.label for s in scenes}
        for scene in scenes:
            scene.relations = relations_for(scene.pk, triples, scene_labels, "picture")
        Detail.objects.bulk_update(scenes, ["relations"])
        invalidate_stages(artwork_id, [Stage.CAPTIONS])
    return SCENES_KEY

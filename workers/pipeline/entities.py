"""Stage 3: entities. Detector regions become entity Details (box, label, confidence, mask, angle), named
from the embedder when the detector does not name them (SAM; workers/pipeline/naming.py), and its
placements (where to show each label it may see: ``Detector.place``) become Placements."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction

from collections_app.models import Detail, DetailLevel, Placement, ReviewState, Stage
from workers.inference.base import Detector, Region
from workers.inference.registry import get_detector, get_embedder
from workers.inference.vocabulary import region_labels
from workers.pipeline import geometry, naming
from workers.pipeline.state import artwork_lock, invalidate_stages, step_version, working_image_open

MAX_ENTITIES = 48
# Near-duplicates: the same label over nearly the same pixels, or any two labels over almost exactly the
# same box.
SAME_LABEL_IOU = 0.6
ANY_LABEL_IOU = 0.9


def regions_deduplicate(regions: Sequence[Region]) -> list[Region]:
    """Clip boxes into the picture, drop slivers, suppress near-duplicates keeping the more confident
    region."""
    kept: list[Region] = []
    for region in sorted(regions, key=lambda r: -r.confidence):
        box = geometry.clip(region.box)
        if box is None:
            continue
        duplicate = any(
            geometry.iou(box, k.box) >= (SAME_LABEL_IOU if k.label == region.label else ANY_LABEL_IOU)
            for k in kept
        )
        if duplicate:
            continue
        region.box = box
        kept.append(region)
        if len(kept) >= MAX_ENTITIES:
            break
    return kept


def _detail_from_region(artwork_id: int, region: Region, model_key: str) -> Detail:
    x, y, w, h = region.box
    relations = []
    facing = region.attributes.get("facing")
    if facing in ("left", "right", "viewer"):
        # Kept as data so the groups stage can turn it into "facing <other entity>".
        relations.append({"relation": "faces", "direction": facing})
    return Detail(
        artwork_id=artwork_id,
        level=DetailLevel.ENTITY,
        x=x,
        y=y,
        w=w,
        h=h,
        angle=float(region.angle or 0.0),
        polygon=region.polygon,
        label=region.label[:300],
        confidence=min(max(float(region.confidence), 0.0), 1.0),
        relations=relations,
        model_key=model_key,
    )


def _placement_from_region(artwork_id: int, region: Region, model_key: str) -> Placement | None:
    box = geometry.clip(region.box)
    if box is None:
        return None
    x, y, w, h = box
    confidence = min(max(float(region.confidence), 0.0), 1.0)
    return Placement(
        artwork_id=artwork_id, label=region.label[:300], x=x, y=y, w=w, h=h, confidence=confidence,
        model_key=model_key,
    )  # fmt: skip


def entities_version(detector: Detector) -> str:
    """The step's version, stored as the details' and placements' ``model_key``: the detector's, and for a
    detector whose regions the pipeline names, the naming's too (embedder version and vocabulary), so a new
    embedder or vocabulary names them again. At most 120 characters, the column's size."""
    if detector.names_regions:
        return detector.model_key
    suffix = f"+names-{naming.naming_version(get_embedder(), region_labels())}"
    return detector.model_key[: 120 - len(suffix)] + suffix


def stage_entities(*, artwork_id: int, force: bool = False) -> str:
    """Detect entities with the active detector; a re-run with the same detector is a no-op.

    When the detector's model_key changes (or ``force``), unreviewed details of every level are replaced,
    since groups and scenes are built from the entities. Details a cataloger reviewed are kept."""
    detector = get_detector()
    version = entities_version(detector)
    with transaction.atomic():
        artwork = artwork_lock(artwork_id)
        if not force and step_version(artwork_id, Stage.ENTITIES) == version:
            return version
        image = working_image_open(artwork)
        found = detector.detect(image)
        if not detector.names_regions:
            found = naming.name_regions(image, found, get_embedder(), region_labels())
        regions = regions_deduplicate(found)
        placed = sorted(detector.place(image, found), key=lambda r: r.confidence)
        best = {r.label: r for r in placed}  # one a label, the most confident
        placements = [_placement_from_region(artwork_id, r, version) for r in best.values()]
        Detail.objects.filter(artwork_id=artwork_id, review_state=ReviewState.UNREVIEWED).delete()
        Detail.objects.bulk_create([_detail_from_region(artwork_id, r, version) for r in regions])
        Placement.objects.filter(artwork_id=artwork_id).delete()
        Placement.objects.bulk_create([p for p in placements if p is not None])
        invalidate_stages(artwork_id, [Stage.GROUPS, Stage.SCENES, Stage.CAPTIONS])
    return version

"""Box arithmetic on relative (0..1) boxes ``(x, y, w, h)``, shared by the entity, group and scene stages."""

from __future__ import annotations

from workers.inference.base import Box

MIN_SIDE = 0.01  # a box thinner than 1% of the picture is noise, and too small to crop and embed


def area(b: Box) -> float:
    return b[2] * b[3]


def intersection(a: Box, b: Box) -> float:
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    return max(0.0, right - left) * max(0.0, bottom - top)


def iou(a: Box, b: Box) -> float:
    inter = intersection(a, b)
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def containment(inner: Box, outer: Box) -> float:
    """How much of ``inner`` lies inside ``outer`` (1.0: all of it)."""
    return intersection(inner, outer) / area(inner) if area(inner) > 0 else 0.0


def gap(a: Box, b: Box) -> float:
    """The empty distance between two boxes (0 when they touch or overlap)."""
    dx = max(0.0, max(a[0], b[0]) - min(a[0] + a[2], b[0] + b[2]))
    dy = max(0.0, max(a[1], b[1]) - min(a[1] + a[3], b[1] + b[3]))
    return float((dx * dx + dy * dy) ** 0.5)


def centre(b: Box) -> tuple[float, float]:
    return b[0] + b[2] / 2, b[1] + b[3] / 2


def union_box(boxes: list[Box]) -> Box:
    left = min(b[0] for b in boxes)
    top = min(b[1] for b in boxes)
    right = max(b[0] + b[2] for b in boxes)
    bottom = max(b[1] + b[3] for b in boxes)
    return clip((left, top, right - left, bottom - top)) or (0.0, 0.0, 1.0, 1.0)


def clip(b: Box) -> Box | None:
    """The part of a box inside the picture, or None when too little of it is left."""
    left, top = min(max(b[0], 0.0), 1.0), min(max(b[1], 0.0), 1.0)
    right, bottom = min(max(b[0] + b[2], 0.0), 1.0), min(max(b[1] + b[3], 0.0), 1.0)
    w, h = right - left, bottom - top
    if w < MIN_SIDE or h < MIN_SIDE:
        return None
    return (left, top, w, h)

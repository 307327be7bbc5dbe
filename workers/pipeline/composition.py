"""How entities form groups and groups form scenes, and the spatial relations between them, as pure functions
over boxes (no database), so the rules can be read and tested on their own.

Groups: entities linked by overlap, containment or nearness (relative to their size), merged greedily
strongest link first, refusing merges that would swallow most of the picture, so a crowd splits into several
groups. Scenes: groups (and entities in no group) linked by nearness, so a portrait is one scene and a crowded
picture with separated clusters is several. The number of details follows the picture, not a fixed count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from workers.inference.base import Box
from workers.pipeline import geometry

# Labels of things that can hold another thing; "holding" needs a small object overlapping one of these.
HOLDERS = frozenset(
    {
        "person",
        "man",
        "woman",
        "child",
        "figure",
        "saint",
        "angel",
        "virgin",
        "madonna",
        "christ",
        "hand",
        "hands",
        "monk",
        "bishop",
        "king",
        "queen",
        "soldier",
        "apostle",
        "prophet",
        "putto",
        "cherub",
        "body",
    }
)
CONTAIN_LINK = 0.7  # share of the smaller box inside the larger that ties two entities together
IOU_LINK = 0.1
NEAR_LINK = 0.25  # gap under this fraction of the smaller box's long side
GROUP_MAX_AREA = 0.5  # a merge that covers more than this (and more than its largest member) is refused
GLUE_MAX_AREA = 0.6  # bigger units (a whole-figure or whole-picture box) do not glue scenes together
SCENE_NEAR = 0.12  # groups closer than this (in picture widths) belong to one scene


@dataclass
class Item:
    """An entity or a group as the composition rules see it."""

    key: int  # index or database id
    box: Box
    label: str
    confidence: float = 0.0
    facing: str = ""  # "left", "right" or "" when unknown


@dataclass
class Cluster:
    members: list[int]  # keys of the items
    box: Box
    label: str
    confidence: float
    relations: list[dict[str, Any]] = field(default_factory=list)  # (subject, relation, object) triples


def _link_strength(a: Item, b: Item) -> float:
    small, large = (a, b) if geometry.area(a.box) <= geometry.area(b.box) else (b, a)
    contained = geometry.containment(small.box, large.box)
    if contained >= CONTAIN_LINK:
        # Inside a whole-figure box a thing belongs with it; inside a near-whole-picture box it says nothing.
        return 2.0 + contained if geometry.area(large.box) <= GLUE_MAX_AREA else 0.0
    overlap = geometry.iou(a.box, b.box)
    if overlap >= IOU_LINK:
        return 1.0 + overlap
    reach = NEAR_LINK * max(small.box[2], small.box[3])
    distance = geometry.gap(a.box, b.box)
    if distance <= reach:
        return 1.0 - distance / max(reach, 1e-9)
    return 0.0


class _Sets:
    def __init__(self, keys: list[int]) -> None:
        self.parent = {k: k for k in keys}

    def find(self, k: int) -> int:
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def groups(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for k in self.parent:
            out.setdefault(self.find(k), []).append(k)
        return out


def pair_relations(a: Item, b: Item, *, holding: bool = True) -> list[str]:
    """Relations with ``a`` as subject and ``b`` as object: holding, facing, left_of/right_of/above/below,
    next_to. ``holding`` is only for entities: a group does not hold another group."""
    relations: list[str] = []
    inter = geometry.intersection(a.box, b.box)
    if (
        holding
        and a.label.lower() in HOLDERS
        # A figure box over most of the picture overlaps everything; that is not holding.
        and geometry.area(a.box) <= GLUE_MAX_AREA
        and geometry.area(b.box) <= 0.35 * geometry.area(a.box)
        and geometry.area(b.box) > 0
        and inter / geometry.area(b.box) >= 0.3
        and b.label.lower() not in HOLDERS - {"putto", "cherub"}
    ):
        relations.append("holding")
    (ax, ay), (bx, by) = geometry.centre(a.box), geometry.centre(b.box)
    dx, dy = bx - ax, by - ay
    if abs(dx) >= abs(dy):
        relations.append("left_of" if dx > 0 else "right_of")
    else:
        relations.append("above" if dy > 0 else "below")
    if a.facing in ("left", "right") and (a.facing == "right") == (dx > 0):
        relations.append("facing")
    if geometry.gap(a.box, b.box) <= 0.05 and "holding" not in relations:
        relations.append("next_to")
    return relations


def relation_triples(items: list[Item], *, holding: bool = True) -> list[dict[str, Any]]:
    triples: list[dict[str, Any]] = []
    for a in items:
        for b in items:
            if a.key != b.key:
                triples.extend(
                    {"subject": a.key, "relation": r, "object": b.key}
                    for r in pair_relations(a, b, holding=holding)
                )
    return triples


def spoken(label: str) -> str:
    """A label as words: detector vocabularies write "open_book"."""
    return " ".join(label.replace("_", " ").split())


_NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
# Labels that are names or carry their own determiner take no article: "the Virgin Mary", "two saints".
_NO_ARTICLE = re.compile(r"^(?:a|an|the|some|several|many|two|three|four|five|six|saint|st\.?|[A-Z]|\d+)\b")
_PLURAL = re.compile(r"[^s]s$")  # "wings", "keys": no article (a cross, a dress keep theirs)


def article(label: str) -> str:
    label = spoken(label)
    if not label:
        return "something"
    if _NO_ARTICLE.match(label) or _PLURAL.search(label.split(",")[0].split(" and ")[0]):
        return label
    return f"an {label}" if label[0].lower() in "aeiou" else f"a {label}"


def _counted(label: str, count: int) -> str:
    """ "saint" x 3 -> "three saints"; names and phrases are repeated instead of pluralised."""
    if count == 1:
        return label
    if re.fullmatch(r"[a-z]+", label) and not label.endswith("s"):
        return f"{_NUMBERS.get(count, str(count))} {label}s"
    return " and ".join([label] * min(count, 2))


def _and_join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + f" and {parts[-1]}"


def _cluster_label(items: list[Item], triples: list[dict[str, Any]]) -> str:
    by_key = {i.key: i for i in items}
    held = [t for t in triples if t["relation"] == "holding"]
    if held:
        t = held[0]
        return f"{spoken(by_key[t['subject']].label)} holding {spoken(by_key[t['object']].label)}"
    counts: dict[str, int] = {}
    for item in sorted(items, key=lambda i: -i.confidence):
        if item.label:
            counts[spoken(item.label)] = counts.get(spoken(item.label), 0) + 1
    if not counts:
        return ""
    return _and_join([_counted(label, n) for label, n in list(counts.items())[:4]])


def _cluster(items: list[Item], members: list[int], *, holding: bool = True) -> Cluster:
    chosen = [i for i in items if i.key in set(members)]
    triples = relation_triples(chosen, holding=holding)
    return Cluster(
        members=[i.key for i in chosen],
        box=geometry.union_box([i.box for i in chosen]),
        label=_cluster_label(chosen, triples),
        confidence=sum(i.confidence for i in chosen) / len(chosen),
        relations=triples,
    )


def group_entities(entities: list[Item]) -> list[Cluster]:
    """Groups of entities that belong together. Entities with no partner stay out of every group, except that
    a picture whose entities are all apart gets its most confident entity as a group, so each picture with
    anything detected has the full entity -> group -> scene hierarchy."""
    links = []
    for i, a in enumerate(entities):
        for b in entities[i + 1 :]:
            strength = _link_strength(a, b)
            if strength > 0:
                links.append((strength, a.key, b.key))
    sets = _Sets([e.key for e in entities])
    boxes = {e.key: [e.box] for e in entities}
    for _strength, ka, kb in sorted(links, reverse=True):
        ra, rb = sets.find(ka), sets.find(kb)
        if ra == rb:
            continue
        merged = boxes[ra] + boxes[rb]
        largest = max(geometry.area(b) for b in merged)
        if geometry.area(geometry.union_box(merged)) > max(GROUP_MAX_AREA, 1.1 * largest):
            continue
        sets.parent[rb] = ra
        boxes[ra] = merged
    clusters = [_cluster(entities, m) for m in sets.groups().values() if len(m) >= 2]
    if not clusters and entities:
        best = max(entities, key=lambda e: (e.confidence, geometry.area(e.box)))
        clusters = [_cluster(entities, [best.key])]
    return sorted(clusters, key=lambda c: (c.box[1], c.box[0]))


def scene_clusters(units: list[Item]) -> list[Cluster]:
    """Scenes: units (groups and loose entities) near each other. Very large units join the scene they overlap
    most instead of gluing every scene into one."""
    glue = [u for u in units if geometry.area(u.box) <= GLUE_MAX_AREA]
    big = [u for u in units if geometry.area(u.box) > GLUE_MAX_AREA]
    sets = _Sets([u.key for u in glue])
    for i, a in enumerate(glue):
        for b in glue[i + 1 :]:
            if geometry.gap(a.box, b.box) <= SCENE_NEAR:
                sets.parent[sets.find(b.key)] = sets.find(a.key)
    members = list(sets.groups().values())
    by_key = {u.key: u for u in units}
    for u in big:
        if not members:
            members.append([u.key])
            continue
        best = max(
            members,
            key=lambda m: geometry.intersection(u.box, geometry.union_box([by_key[k].box for k in m])),
        )
        best.append(u.key)
    return sorted((_cluster(units, m, holding=False) for m in members), key=lambda c: (c.box[1], c.box[0]))

"""The vocabulary of things a detail can be, for the backends that need one given: what SAM's unnamed
regions are named from (workers/pipeline/naming.py) and what an open-vocabulary detector looks for
(workers/inference/production/owl.py). ``settings.SEMART_REGION_LABELS`` replaces it."""

from __future__ import annotations

from django.conf import settings

# What a detail of a European painting, icon or print most often is: figures, attributes of saints,
# animals, things held, places. Bare phrases as stored on details ("halo", "the Virgin Mary"), the words the
# offline detector's labels and the search's label routing use.
ART_LABELS: tuple[str, ...] = (
    # figures
    "angel", "saint", "the Virgin Mary", "Christ", "the Christ Child", "the crucified Christ",
    "God the Father", "Virgin and Child", "apostle", "prophet", "bishop", "monk", "nun", "pope", "king",
    "queen", "knight", "soldier", "shepherd", "putto", "demon", "person", "woman", "man", "child", "crowd",
    "donor",
    # parts of figures
    "face", "hand", "blessing hand of Christ", "halo", "wings", "beard", "robe", "mantle", "armour",
    # things held or worn
    "book", "scroll", "crown", "crown of thorns", "mitre", "cross", "crucifix", "sceptre", "orb", "sword",
    "spear", "shield", "banner", "chalice", "key", "lily", "palm branch", "flower", "skull", "candle",
    "lamp", "lute", "harp", "trumpet", "staff", "jewel", "vase", "basket", "basin", "bowl", "cup", "throne",
    "table", "bed", "tomb",
    # animals
    "lion", "lamb", "dove", "horse", "dragon", "dog", "ox", "donkey", "eagle", "serpent", "fish", "bird",
    "deer", "sheep", "camel",
    # places and nature
    "church", "castle", "tower", "town", "house", "ruin", "bridge", "ship", "boat", "tree", "mountain",
    "rock", "river", "sea", "clouds", "sky", "moon", "sun", "star", "garden", "landscape", "column", "arch",
    "window", "curtain", "floor",
)  # fmt: skip


def region_labels() -> tuple[str, ...]:
    """The vocabulary regions are named from: ``SEMART_REGION_LABELS``, else ``ART_LABELS``."""
    labels = tuple(dict.fromkeys(s.strip() for s in settings.SEMART_REGION_LABELS if s.strip()))
    return labels or ART_LABELS


def prompt(label: str) -> str:
    """How a phrase is embedded: "a painting of a halo", "... of an angel", "... of the Virgin Mary"."""
    if label[:1].isupper() or label.lower().startswith(("the ", "a ", "an ")):
        return f"a painting of {label}"
    article = "an" if label[:1].lower() in "aeiou" else "a"
    return f"a painting of {article} {label}"

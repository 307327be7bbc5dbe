"""ComposedCaptioner: captions written from what the pipeline already knows, with no model.

The pipeline composes a sentence from a detail's label and its spatial relations ("an angel holding a
lily, left of a dove") into ``CaptionRequest.context``; this captioner turns it into a caption and adds
where in the picture the detail is, which the relations do not say. A request without context still
gets a sentence from its label and level. It is the offline default and the fallback when no captioning
model can run; it cannot describe anything the detector did not name.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from workers.inference.base import Box, Captioner, CaptionRequest

if TYPE_CHECKING:
    from PIL.Image import Image

_VOWEL_SOUND = re.compile(r"^(?:[aeio]|u(?!ni|se|ku)|hour|honou?r)", re.IGNORECASE)
# Labels that read as names or already carry their determiner take no article.
_NO_ARTICLE = re.compile(r"^(?:(?:a|an|the|some|two|three|four|several|many|saint|st\.?|christ|god)\b|[A-Z])")


def with_article(label: str) -> str:
    label = " ".join(label.split())
    if not label or _NO_ARTICLE.match(label):
        return label
    return f"{'an' if _VOWEL_SOUND.match(label) else 'a'} {label}"


def position_phrase(box: Box) -> str:
    """Where a box lies: "across the whole picture", "in the upper left", "in the centre"..."""
    x, y, w, h = box
    if w * h >= 0.8:
        return "across the whole picture"
    cx, cy = x + w / 2, y + h / 2
    row = "upper" if cy < 1 / 3 else "lower" if cy > 2 / 3 else ""
    column = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    if not row and not column:
        return "in the centre"
    if not column:
        return f"in the {row} part"  # "in the upper part"
    if not row:
        return f"on the {column}"
    return f"in the {row} {column}"


class ComposedCaptioner(Captioner):
    key = "composed"
    version = "1"

    def _load(self) -> None:
        """Nothing to load: the captioner reads only the requests."""

    def _caption(self, image: Image, requests: list[CaptionRequest]) -> list[str]:
        return [self.compose(request) for request in requests]

    def compose(self, request: CaptionRequest) -> str:
        sentence = " ".join(request.context.split()).rstrip(".")
        # A comma only after a sentence that already has clauses: "a halo in the centre".
        separator = ", " if "," in sentence or " " in sentence.removeprefix("a ").removeprefix("an ") else " "
        if not sentence:
            if request.label:
                sentence = with_article(request.label)
            else:
                sentence = "a scene" if request.level == "scene" else "a detail"
            separator = " "
        if "whole picture" not in sentence:
            sentence = f"{sentence}{separator}{position_phrase(request.box)}"
        return sentence[0].upper() + sentence[1:] + "."

"""Segment Anything as a class-agnostic detector, in the manner of SAM's automatic mask generator.

A grid of single-point prompts is decoded against one image embedding; each point keeps its best of SAM's
three masks; masks SAM itself rates poorly (predicted IoU) or that change a lot with the logit threshold
(stability) are dropped; the rest become boxes, outline polygons (cv2.findContours) and a rotation angle
(cv2.minAreaRect), and overlapping boxes are suppressed (NMS).

SAM does not name what it finds: every region is labelled ``UNLABELLED`` ("region") with SAM's predicted IoU
as its confidence, and the entities stage names it from the embedder (``workers/pipeline/naming.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from workers.inference.base import UNLABELLED, Detector, Region
from workers.inference.production.checkpoints import (
    checkpoint_settings,
    checkpoint_version,
    from_pretrained,
    model_from_pretrained,
    torch_device_and_dtype,
)

if TYPE_CHECKING:
    from PIL.Image import Image


class SamDetector(Detector):
    """Meta SAM (default ``facebook/sam-vit-base``). Env: ``SEMART_SAM_CHECKPOINT``.

    Options: ``points_per_side`` (16: a 16x16 grid), ``points_per_batch`` (32), ``pred_iou_thresh`` (0.88),
    ``stability_thresh`` (0.92), ``min_area`` (0.002 of the image), ``nms_iou`` (0.7), ``max_regions`` (48).
    """

    key = "sam"
    names_regions = False
    default_checkpoint = "facebook/sam-vit-base"
    env_var = "SEMART_SAM_CHECKPOINT"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.options, self.checkpoint = checkpoint_settings(self)
        self.version = checkpoint_version(self.checkpoint)
        self.points_per_side = int(self.options.get("points_per_side", 16))
        self.points_per_batch = int(self.options.get("points_per_batch", 32))
        self.pred_iou_thresh = float(self.options.get("pred_iou_thresh", 0.88))
        self.stability_thresh = float(self.options.get("stability_thresh", 0.92))
        self.min_area = float(self.options.get("min_area", 0.002))
        self.nms_iou = float(self.options.get("nms_iou", 0.7))
        self.max_regions = int(self.options.get("max_regions", 48))
        if self.points_per_side < 1 or self.points_per_batch < 1:
            raise ValueError("points_per_side and points_per_batch must be at least 1")

    def _load(self) -> None:
        from transformers import SamModel, SamProcessor

        self.torch_device, self.torch_dtype = torch_device_and_dtype(self.device_preference)
        model = model_from_pretrained(SamModel, self.checkpoint, dtype=self.torch_dtype)
        self.model = model.to(self.torch_device).eval()
        self.processor = from_pretrained(SamProcessor, self.checkpoint)

    def _detect(self, image: Image) -> list[Region]:
        rgb = image.convert("RGB")
        inputs = self.processor(images=rgb, return_tensors="pt")
        resized_h, resized_w = (int(v) for v in inputs["reshaped_input_sizes"][0])
        pad = self.processor.image_processor.pad_size
        padded = (int(pad["height"]), int(pad["width"]))
        candidates = self._masks(inputs["pixel_values"], (resized_h, resized_w), padded)
        regions = [r for r in (_region(mask, score, stability) for mask, score, stability in candidates) if r]
        regions = [r for r in regions if r.box[2] * r.box[3] >= self.min_area]
        return _nms(regions, self.nms_iou)[: self.max_regions]

    def _grid(self, size: tuple[int, int]) -> np.ndarray:
        """Point prompts at cell centres, in resized-image pixels (what SAM's prompt encoder expects)."""
        height, width = size
        steps = (np.arange(self.points_per_side) + 0.5) / self.points_per_side
        xs, ys = np.meshgrid(steps * width, steps * height)
        return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)

    def _masks(
        self, pixel_values: Any, resized: tuple[int, int], padded: tuple[int, int]
    ) -> list[tuple[np.ndarray, float, float]]:
        import torch
        import torch.nn.functional as F

        kept: list[tuple[np.ndarray, float, float]] = []
        points = self._grid(resized)
        with torch.inference_mode():
            embeddings = self.model.get_image_embeddings(pixel_values.to(self.torch_device, self.torch_dtype))
            for start in range(0, len(points), self.points_per_batch):
                chunk = torch.from_numpy(points[start : start + self.points_per_batch]).to(self.torch_device)
                count = chunk.shape[0]
                output = self.model(
                    image_embeddings=embeddings,
                    input_points=chunk.reshape(1, count, 1, 2),
                    input_labels=torch.ones((1, count, 1), dtype=torch.long, device=self.torch_device),
                    multimask_output=True,
                )
                iou = output.iou_scores[0].float()  # (count, 3)
                best = iou.argmax(dim=-1)
                rows = torch.arange(count, device=iou.device)
                scores = iou[rows, best]
                logits = output.pred_masks[0][rows, best].float()  # (count, h/4, w/4) low-res logits
                # Upsample to the padded model input, then cut the padding off: masks in resized-image pixels.
                logits = F.interpolate(logits[:, None], size=padded, mode="bilinear", align_corners=False)
                logits = logits[:, 0, : resized[0], : resized[1]]
                stability = _stability(logits)
                for i in range(count):
                    score, stable = float(scores[i]), float(stability[i])
                    if score < self.pred_iou_thresh or stable < self.stability_thresh:
                        continue
                    kept.append(((logits[i] > 0).cpu().numpy(), score, stable))
        return kept


def _stability(logits: Any, offset: float = 1.0) -> Any:
    """SAM's stability score: IoU of the mask thresholded at +offset and at -offset."""
    high = (logits > offset).flatten(1).sum(-1).float()
    low = (logits > -offset).flatten(1).sum(-1).float()
    return high / low.clamp(min=1.0)


def _region(mask: np.ndarray, score: float, stability: float) -> Region | None:
    import cv2

    height, width = mask.shape
    binary = mask.astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    x, y, w, h = cv2.boundingRect(binary)
    outline = max(contours, key=cv2.contourArea)
    simplified = cv2.approxPolyDP(outline, 0.005 * cv2.arcLength(outline, True), True).reshape(-1, 2)
    polygon = [[round(float(px) / width, 5), round(float(py) / height, 5)] for px, py in simplified]
    # A rectangle tilted by a, a-90 or a+90 is the same rectangle, and OpenCV versions disagree on the range
    # they report ((0, 90] or [-90, 0)); so report the smallest tilt, in [-45, 45).
    angle = (float(cv2.minAreaRect(outline)[2]) + 45.0) % 90.0 - 45.0
    return Region(
        box=(x / width, y / height, w / width, h / height),
        label=UNLABELLED,
        confidence=max(0.0, min(1.0, score)),
        polygon=polygon if len(polygon) >= 3 else None,
        angle=angle,
        source="sam",
        attributes={"stability": round(stability, 4), "mask_area": round(float(binary.mean()), 5)},
    )


def _nms(regions: list[Region], threshold: float) -> list[Region]:
    ordered = sorted(regions, key=lambda r: r.confidence, reverse=True)
    kept: list[Region] = []
    for region in ordered:
        if all(_box_iou(region.box, other.box) <= threshold for other in kept):
            kept.append(region)
    return kept


def _box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, right - left) * max(0.0, bottom - top)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0

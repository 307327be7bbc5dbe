"""BLIP conditional captioning: each requested region is cropped and captioned from a prompt built from its
label, so the caption continues "a painting of <label>" instead of describing the whole picture."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workers.inference.base import Captioner, CaptionRequest, crop
from workers.inference.production.checkpoints import (
    batches,
    checkpoint_settings,
    checkpoint_version,
    from_pretrained,
    model_from_pretrained,
    torch_device_and_dtype,
)

if TYPE_CHECKING:
    from PIL.Image import Image


class BlipCaptioner(Captioner):
    """Salesforce BLIP (default ``Salesforce/blip-image-captioning-base``). Env: ``SEMART_BLIP_CHECKPOINT``.

    Options: ``prompt`` (a template with ``{label}``), ``max_new_tokens``, ``num_beams``, ``batch_size``.
    """

    key = "blip"
    default_checkpoint = "Salesforce/blip-image-captioning-base"
    env_var = "SEMART_BLIP_CHECKPOINT"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.options, self.checkpoint = checkpoint_settings(self)
        self.version = checkpoint_version(self.checkpoint)
        self.prompt = str(self.options.get("prompt", "a painting of {label}"))
        self.max_new_tokens = int(self.options.get("max_new_tokens", 30))
        self.num_beams = int(self.options.get("num_beams", 3))
        self.batch_size = int(self.options.get("batch_size", 8))

    def _load(self) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, BlipForConditionalGeneration

        self.torch_device, self.torch_dtype = torch_device_and_dtype(self.device_preference)
        model = model_from_pretrained(BlipForConditionalGeneration, self.checkpoint, dtype=self.torch_dtype)
        self.model = model.to(self.torch_device).eval()
        self.tokenizer = from_pretrained(AutoTokenizer, self.checkpoint)
        self.image_processor = from_pretrained(AutoImageProcessor, self.checkpoint)

    def prompt_for(self, request: CaptionRequest) -> str:
        label = " ".join(request.label.replace("_", " ").split()) or "a detail"
        return self.prompt.format(label=label)

    def _caption(self, image: Image, requests: list[CaptionRequest]) -> list[str]:
        import torch

        # BLIP's generate drops the prompt's last token ([SEP]) by position, which is only right for unpadded
        # prompts; so requests are batched by identical prompt (often the same label) and never padded.
        by_prompt: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            by_prompt.setdefault(self.prompt_for(request), []).append(index)
        captions = [""] * len(requests)
        rgb = image.convert("RGB")
        for prompt, indices in by_prompt.items():
            for chunk in batches(indices, self.batch_size):
                crops = [crop(rgb, requests[i].box) for i in chunk]
                pixels = self.image_processor(images=crops, return_tensors="pt")["pixel_values"]
                encoded = self.tokenizer([prompt] * len(chunk), return_tensors="pt")
                with torch.inference_mode():
                    output = self.model.generate(
                        pixel_values=pixels.to(self.torch_device, self.torch_dtype),
                        input_ids=encoded["input_ids"].to(self.torch_device),
                        attention_mask=encoded["attention_mask"].to(self.torch_device),
                        max_new_tokens=self.max_new_tokens,
                        num_beams=self.num_beams,
                        do_sample=False,
                    )
                texts = self.tokenizer.batch_decode(output, skip_special_tokens=True)
                for i, text in zip(chunk, texts, strict=True):
                    captions[i] = " ".join(text.split())
        return captions

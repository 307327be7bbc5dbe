"""Dual-encoder embedders (CLIP, SigLIP) through transformers: one tower per modality, one shared space.

Regions are embedded as crops (the base class's default): both models were trained on whole pictures, and
a crop is the input they know. Outputs are L2-normalised by :class:`Embedder`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from workers.inference.base import Embedder
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


class _DualEncoderEmbedder(Embedder):
    default_checkpoint = ""
    env_var = ""
    model_class_name = ""
    batch_size = 32

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.options, self.checkpoint = checkpoint_settings(self)
        self.version = checkpoint_version(self.checkpoint)
        self.batch_size = int(self.options.get("batch_size", type(self).batch_size))

    def _load(self) -> None:
        import transformers
        from transformers import AutoImageProcessor, AutoTokenizer

        self.torch_device, self.torch_dtype = torch_device_and_dtype(self.device_preference)
        model_class = getattr(transformers, self.model_class_name)
        model = model_from_pretrained(model_class, self.checkpoint, dtype=self.torch_dtype)
        self.model = model.to(self.torch_device).eval()
        self.tokenizer = from_pretrained(AutoTokenizer, self.checkpoint)
        self.image_processor = from_pretrained(AutoImageProcessor, self.checkpoint)
        self.dim = self._output_dim(self.model.config)

    def _output_dim(self, config: Any) -> int:
        raise NotImplementedError

    def _text_inputs(self, texts: list[str]) -> dict[str, Any]:
        raise NotImplementedError

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        rows = []
        for batch in batches(texts, self.batch_size):
            inputs = {k: v.to(self.torch_device) for k, v in self._text_inputs(batch).items()}
            with torch.inference_mode():
                rows.append(_pooled(self.model.get_text_features(**inputs)))
        return np.concatenate(rows)

    def _embed_images(self, images: list[Image]) -> np.ndarray:
        import torch

        rows = []
        for batch in batches(images, self.batch_size):
            pixels = self.image_processor(images=[i.convert("RGB") for i in batch], return_tensors="pt")
            pixel_values = pixels["pixel_values"].to(self.torch_device, self.torch_dtype)
            with torch.inference_mode():
                rows.append(_pooled(self.model.get_image_features(pixel_values=pixel_values)))
        return np.concatenate(rows)


class ClipEmbedder(_DualEncoderEmbedder):
    """OpenAI CLIP (default ``openai/clip-vit-base-patch32``, 512-d). Env: ``SEMART_CLIP_CHECKPOINT``."""

    key = "clip"
    dim = 512
    default_checkpoint = "openai/clip-vit-base-patch32"
    env_var = "SEMART_CLIP_CHECKPOINT"
    model_class_name = "CLIPModel"

    def _output_dim(self, config: Any) -> int:
        return int(config.projection_dim)

    def _text_inputs(self, texts: list[str]) -> dict[str, Any]:
        # CLIP pools at the end-of-text token, so the attention mask makes padded batches equal to singles.
        limit = int(self.model.config.text_config.max_position_embeddings)
        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


class SiglipEmbedder(_DualEncoderEmbedder):
    """Google SigLIP (default ``google/siglip-base-patch16-224``, 768-d).

    Env: ``SEMART_SIGLIP_CHECKPOINT``."""

    key = "siglip"
    dim = 768
    default_checkpoint = "google/siglip-base-patch16-224"
    env_var = "SEMART_SIGLIP_CHECKPOINT"
    model_class_name = "SiglipModel"

    def _output_dim(self, config: Any) -> int:
        # The text head projects to projection_size (transformers 5), equal to the hidden size in Google's
        # checkpoints; the vision head keeps the hidden size.
        text = config.text_config
        return int(getattr(text, "projection_size", None) or text.hidden_size)

    def _text_inputs(self, texts: list[str]) -> dict[str, Any]:
        # SigLIP was trained on text padded to the full length without an attention mask; its model card
        # asks for padding="max_length", and passing a mask would change the embeddings.
        limit = int(self.model.config.text_config.max_position_embeddings)
        encoded = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=limit, return_tensors="pt"
        )
        return {"input_ids": encoded["input_ids"]}


def _pooled(features: Any) -> np.ndarray:
    # transformers 5 returns a model output whose pooler_output holds the projected features; 4.x a tensor.
    tensor = getattr(features, "pooler_output", features)
    return tensor.float().cpu().numpy()

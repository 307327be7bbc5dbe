"""Qwen3-VL embedding and reranking through transformers' Qwen3-VL classes.

Both models read chat-formatted prompts. The prompt is written here rather than by the checkpoint's chat
template, and images are expanded into their vision tokens here rather than by ``AutoProcessor``: the
Qwen3-VL processor also builds a video processor, which needs torchvision, and this project does not
install it. What the model sees is the ChatML the checkpoints' own template produces for one system and one
user turn with the generation prompt opened.

* Embedding (Qwen3-VL-Embedding card): system turn = instruction, user turn = image and/or text; the vector
  is the hidden state of the last attended token, L2-normalised (optionally cut to ``dimensions`` first:
  the model is Matryoshka-trained).
* Reranking (Qwen3-VL-Reranker card): system turn asks for "yes" or "no", user turn holds
  ``<Instruct>``, ``<Query>`` and ``<Document>`` (text and picture), the assistant turn opens with an empty
  think block; score = sigmoid(logit("yes") - logit("no")) at the last position.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from workers.inference.base import Embedder, RerankCandidate, Reranker
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

logger = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
_CONTROL_TOKEN = re.compile(r"<\|[a-z_]+\|>")
QUERY_INSTRUCTION = "Retrieve images or text relevant to the user's query."
DOCUMENT_INSTRUCTION = "Represent the user's input."
RERANK_SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
RERANK_INSTRUCTION = "Given a search query, retrieve relevant candidates that answer the query."
# The embedding card's preprocessing: images are resized to multiples of 32 px (16 px patches, 2x2 merge)
# with at most 1800 merged patches; fewer on a small CPU box via the ``max_pixels`` option.
IMAGE_FACTOR = 32
MIN_PIXELS = 4 * IMAGE_FACTOR * IMAGE_FACTOR
MAX_PIXELS = 1800 * IMAGE_FACTOR * IMAGE_FACTOR


@dataclass
class _Turn:
    """One user turn: images come first, then text, as in the cards' examples."""

    text: str
    images: list[Image] = field(default_factory=list)


def chatml(system: str, user: str, assistant_prefix: str = "") -> str:
    return (
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
        f"<|im_start|>assistant\n{assistant_prefix}"
    )


class _Qwen3VLBackend:
    """Loading and input building shared by the embedder and the reranker."""

    default_checkpoint = ""
    env_var = ""
    options: dict[str, Any]
    device_preference: str
    model_dir: Any

    def _configure(self) -> None:
        self.options, self.checkpoint = checkpoint_settings(self)
        self.min_pixels = int(self.options.get("min_pixels", MIN_PIXELS))
        self.max_pixels = int(self.options.get("max_pixels", MAX_PIXELS))
        self.max_text_chars = int(self.options.get("max_text_chars", 4000))

    def _load_parts(self, model_class_name: str) -> None:
        import transformers
        from transformers import AutoImageProcessor, AutoTokenizer

        self.torch_device, self.torch_dtype = torch_device_and_dtype(self.device_preference)
        model = model_from_pretrained(
            getattr(transformers, model_class_name), self.checkpoint, dtype=self.torch_dtype
        )
        self.model = model.to(self.torch_device).eval()
        self.tokenizer = from_pretrained(AutoTokenizer, self.checkpoint)
        self.image_processor = from_pretrained(AutoImageProcessor, self.checkpoint)
        self.image_token_id = int(self.model.config.image_token_id)
        self.merge_size = int(getattr(self.image_processor, "merge_size", 2))

    def _inputs(self, prompts: list[str], images: list[Image]) -> dict[str, Any]:
        """Model inputs: token ids left-padded (so the last position is every row's last token), and the
        vision patches; ``prompts`` hold one ``<|image_pad|>`` per image, in order."""
        pixel_inputs: dict[str, Any] = {}
        if images:
            processed = self.image_processor(
                images=[i.convert("RGB") for i in images],
                size={"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
                return_tensors="pt",
            )
            grids = processed["image_grid_thw"]
            prompts = _expand_image_tokens(prompts, [int(g.prod()) // self.merge_size**2 for g in grids])
            pixel_inputs = {
                "pixel_values": processed["pixel_values"].to(self.torch_device, self.torch_dtype),
                "image_grid_thw": grids.to(self.torch_device),
            }
        encoded = self.tokenizer(prompts, padding=True, padding_side="left", return_tensors="pt")
        input_ids = encoded["input_ids"].to(self.torch_device)
        attention_mask = encoded["attention_mask"].to(self.torch_device)
        inputs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "use_cache": False,
        }
        if images:
            # The model computes its multimodal RoPE positions from these (text 0, image 1), skipping padding.
            inputs["mm_token_type_ids"] = (input_ids == self.image_token_id).int()
            inputs.update(pixel_inputs)
        return inputs

    def _clip_text(self, text: str) -> str:
        # Catalogue text is data, not markup: a "<|im_end|>" or "<|image_pad|>" in a title would end the turn
        # or ask for a picture that is not there, so control tokens are removed before the text is placed.
        return _CONTROL_TOKEN.sub("", text)[: self.max_text_chars]


def _expand_image_tokens(prompts: list[str], counts: list[int]) -> list[str]:
    pending = iter(counts)
    expanded = []
    for prompt in prompts:
        parts = prompt.split("<|image_pad|>")
        out = parts[0]
        for part in parts[1:]:
            out += "<|image_pad|>" * next(pending) + part
        expanded.append(out)
    return expanded


class Qwen3VLEmbedder(_Qwen3VLBackend, Embedder):
    """Qwen3-VL-Embedding (default ``Qwen/Qwen3-VL-Embedding-2B``, 2048-d).

    Env: ``SEMART_QWEN3VL_EMBEDDING_CHECKPOINT``.

    Options: ``dimensions`` (Matryoshka cut, e.g. 1024), ``batch_size`` (8), ``query_instruction``,
    ``document_instruction``, ``min_pixels``, ``max_pixels``, ``max_text_chars``.
    """

    key = "qwen3-vl-embedding"
    dim = 2048
    default_checkpoint = "Qwen/Qwen3-VL-Embedding-2B"
    env_var = "SEMART_QWEN3VL_EMBEDDING_CHECKPOINT"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._configure()
        self.dimensions = int(self.options["dimensions"]) if self.options.get("dimensions") else None
        if self.dimensions:
            self.dim = self.dimensions
        self.version = checkpoint_version(self.checkpoint) + (
            f"-d{self.dimensions}" if self.dimensions else ""
        )
        self.batch_size = int(self.options.get("batch_size", 8))
        # Texts are queries (search) and pictures are the collection: the card trains each with its own
        # instruction, and stored vectors must keep the one they were made with.
        self.query_instruction = str(self.options.get("query_instruction", QUERY_INSTRUCTION))
        self.document_instruction = str(self.options.get("document_instruction", DOCUMENT_INSTRUCTION))

    def _load(self) -> None:
        # Qwen3VLModel reads the ...ForConditionalGeneration checkpoints too and skips the unused LM head.
        self._load_parts("Qwen3VLModel")
        hidden = int(self.model.config.text_config.hidden_size)
        if self.dimensions and self.dimensions > hidden:
            raise ValueError(f"dimensions={self.dimensions} exceeds the model's hidden size {hidden}")
        self.dim = self.dimensions or hidden

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        turns = [_Turn(self._clip_text(t)) for t in texts]
        return self._embed_turns(turns, self.query_instruction)

    def _embed_images(self, images: list[Image]) -> np.ndarray:
        return self._embed_turns([_Turn("", [image]) for image in images], self.document_instruction)

    def _embed_turns(self, turns: list[_Turn], instruction: str) -> np.ndarray:
        import torch

        rows = []
        for batch in batches(turns, self.batch_size):
            prompts = [chatml(instruction, IMAGE_PLACEHOLDER * len(t.images) + t.text) for t in batch]
            inputs = self._inputs(prompts, [image for t in batch for image in t.images])
            with torch.inference_mode():
                hidden = self.model(**inputs).last_hidden_state
            pooled = _last_attended(hidden, inputs["attention_mask"])
            rows.append(pooled[:, : self.dim].float().cpu().numpy())
        return np.concatenate(rows)


class Qwen3VLReranker(_Qwen3VLBackend, Reranker):
    """Qwen3-VL-Reranker (default ``Qwen/Qwen3-VL-Reranker-2B``). Env: ``SEMART_QWEN3VL_RERANKER_CHECKPOINT``.

    Each candidate's document is its text plus its picture (``image_path``) when the file can be read; a
    missing or unreadable picture is logged and the candidate is judged on its text alone. Options:
    ``instruction``, ``batch_size`` (4), ``min_pixels``, ``max_pixels``, ``max_text_chars``, ``use_images``.
    """

    key = "qwen3-vl-reranker"
    default_checkpoint = "Qwen/Qwen3-VL-Reranker-2B"
    env_var = "SEMART_QWEN3VL_RERANKER_CHECKPOINT"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._configure()
        self.version = checkpoint_version(self.checkpoint)
        self.batch_size = int(self.options.get("batch_size", 4))
        self.instruction = str(self.options.get("instruction", RERANK_INSTRUCTION))
        self.use_images = bool(self.options.get("use_images", True))

    def _load(self) -> None:
        self._load_parts("Qwen3VLForConditionalGeneration")
        yes = self.tokenizer.convert_tokens_to_ids("yes")
        no = self.tokenizer.convert_tokens_to_ids("no")
        unknown = self.tokenizer.unk_token_id
        if yes is None or no is None or yes == unknown or no == unknown:
            from workers.inference.base import ModelLoadError

            raise ModelLoadError(f"{self.checkpoint}: the tokenizer has no single 'yes'/'no' tokens")
        self.yes_id, self.no_id = int(yes), int(no)

    def prompt_for(self, query: str, candidate: RerankCandidate, with_image: bool) -> str:
        document = (IMAGE_PLACEHOLDER if with_image else "") + self._clip_text(candidate.text)
        user = f"<Instruct>: {self.instruction}\n<Query>: {self._clip_text(query)}\n<Document>: {document}"
        return chatml(RERANK_SYSTEM, user, assistant_prefix="<think>\n\n</think>\n\n")

    def _score(
        self, query: str, batch: list[RerankCandidate], *, query_vector: np.ndarray | None
    ) -> list[float]:
        import torch

        prompts, images = [], []
        for candidate in batch:
            image = self._picture(candidate) if self.use_images else None
            prompts.append(self.prompt_for(query, candidate, with_image=image is not None))
            if image is not None:
                images.append(image)
        inputs = self._inputs(prompts, images)
        with torch.inference_mode():
            logits = self.model(**inputs, logits_to_keep=1).logits[:, -1, :]
        margin = logits[:, self.yes_id].float() - logits[:, self.no_id].float()
        return [float(s) for s in torch.sigmoid(margin).cpu()]

    def _picture(self, candidate: RerankCandidate) -> Image | None:
        if not candidate.image_path:
            return None
        from PIL import Image as PILImage

        try:
            with PILImage.open(candidate.image_path) as opened:
                opened.load()
                return opened.convert("RGB")
        except (OSError, ValueError) as error:
            logger.warning(
                "reranking %s on its text: cannot read %s (%s)", candidate.id, candidate.image_path, error
            )
            return None


def _last_attended(hidden: Any, attention_mask: Any) -> Any:
    """Hidden state of each row's last attended token, whichever side the tokenizer padded."""
    import torch

    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (positions * attention_mask).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

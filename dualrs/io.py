"""Checkpoints: safetensors weights + JSON metadata, written atomically; no pickle is ever loaded."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from dualrs.models import create_model
from dualrs.tables import atomic_file, write_json

_BUILD_ONLY_KWARGS = ("weights", "pretrained")


def metadata_path(checkpoint: Path | str) -> Path:
    return Path(checkpoint).with_suffix(".json")


def save_checkpoint(path: Path | str, model: nn.Module, meta: Mapping[str, Any]) -> None:
    """Write ``path`` (safetensors) and its ``.json`` metadata; ``meta`` must name arch, num_classes, in_chans."""
    missing = {"arch", "num_classes", "in_chans"} - set(meta)
    if missing:
        raise ValueError(f"checkpoint metadata lacks {sorted(missing)}")
    with atomic_file(path) as tmp:
        safetensors.torch.save_model(model, str(tmp))
        write_json(metadata_path(path), dict(meta))


def load_checkpoint(path: Path | str, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model named in the metadata and load its weights; eval mode, on ``device``."""
    path, meta_file = Path(path), metadata_path(path)
    for required in (path, meta_file):
        if not required.is_file():
            raise FileNotFoundError(f"checkpoint file not found: {required}")
    meta = read_metadata(meta_file)
    kwargs = {k: v for k, v in meta.get("model_kwargs", {}).items() if k not in _BUILD_ONLY_KWARGS}
    model = create_model(meta["arch"], meta["num_classes"], meta["in_chans"], **kwargs)
    try:
        safetensors.torch.load_model(model, str(path), device=str(device))
    except RuntimeError as error:
        raise ValueError(f"checkpoint {path} does not match architecture {meta['arch']!r}: {error}") from None
    except safetensors.SafetensorError as error:
        raise ValueError(f"checkpoint {path} is not a safetensors file ({error})") from None
    return model.to(device).eval(), meta


def read_metadata(meta_file: Path) -> dict:
    """A checkpoint's JSON metadata; it must name arch, num_classes and in_chans."""
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"checkpoint metadata {meta_file} is not valid JSON: {error}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"checkpoint metadata {meta_file} must be a JSON object")
    missing = {"arch", "num_classes", "in_chans"} - set(meta)
    if missing:
        raise ValueError(f"checkpoint metadata {meta_file} lacks {sorted(missing)}")
    return meta



"""Checkpoints: safetensors weights + JSON metadata, written atomically; no pickle is ever loaded.

Weight files that dualrs did not write (timm checkpoints, the openai diffusion checkpoints) are read by
:func:`dualrs.models.read_foreign_state_dict`, which unpickles tensors and plain containers only.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from dualrs.models import check_finite_weights, create_model, to_device
from dualrs.tables import atomic_file, read_json_object, write_json
from dualrs.training_state import state_file_for

_BUILD_ONLY_KWARGS = ("weights", "pretrained")
SUFFIX = ".safetensors"


def metadata_path(checkpoint: Path | str) -> Path:
    """``<name>.json`` beside ``<name>.safetensors``. Only that suffix is accepted, so that no two
    checkpoints share a metadata file (``clf_sigma0.25`` and ``clf_sigma0.5`` would both map to
    ``clf_sigma0.json``, ``m`` and ``m.safetensors`` both to ``m.json``)."""
    checkpoint = Path(checkpoint)
    if checkpoint.suffix != SUFFIX:
        raise ValueError(f"checkpoint {checkpoint} must be named *{SUFFIX}: its metadata is written beside it "
                         f"as <name>.json, which only that suffix keeps apart from other checkpoints' metadata")
    return checkpoint.with_suffix(".json")


def save_checkpoint(path: Path | str, model: nn.Module, meta: Mapping[str, Any]) -> None:
    """Write ``path`` (safetensors) and its ``.json`` metadata; ``meta`` must name arch, num_classes, in_chans.
    The saved checkpoint supersedes the training state kept beside it (:func:`state_file_for`), which is removed."""
    missing = {"arch", "num_classes", "in_chans"} - set(meta)
    if missing:
        raise ValueError(f"checkpoint metadata lacks {sorted(missing)}")
    meta_file = metadata_path(path)
    with atomic_file(path) as tmp:
        safetensors.torch.save_model(model, str(tmp))
        write_json(meta_file, dict(meta))
    state_file_for(path).unlink(missing_ok=True)


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
        safetensors.torch.load_model(model, str(path), device="cpu")
    except RuntimeError as error:
        raise ValueError(f"checkpoint {path} does not match architecture {meta['arch']!r}: {error}") from None
    except safetensors.SafetensorError as error:
        raise ValueError(f"checkpoint {path} is not a safetensors file, or is truncated ({error})") from None
    check_finite_weights(model, f"checkpoint {path}")
    return to_device(model, device, f"checkpoint {path}").eval(), meta


def read_metadata(meta_file: Path) -> dict:
    """A checkpoint's JSON metadata; it must name arch, num_classes and in_chans."""
    meta = read_json_object(meta_file, f"checkpoint metadata {meta_file}")
    missing = {"arch", "num_classes", "in_chans"} - set(meta)
    if missing:
        raise ValueError(f"checkpoint metadata {meta_file} lacks {sorted(missing)}")
    return meta

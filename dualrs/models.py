"""Model builders and their registry (in the manner of timm's ``create_model``).

Every model takes images in [0, 1] (the space noise is added in) and returns logits; input
normalization and resizing live inside the model so that a smoothed model is simply f(x + δ).
Architectures are named: ``digits_cnn`` (small CNN for 8×8 digits, used both as classifier and
as variance estimator) or ``timm/<model name>`` (any timm backbone, e.g. an off-the-shelf ViT).
"""
from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a builder ``fn(num_classes, in_chans, **kwargs)`` under ``name``."""
    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = fn
        return fn
    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY) + ["timm/<name>"]


def create_model(arch: str, num_classes: int, in_chans: int, **kwargs) -> nn.Module:
    """Build ``arch`` for ``num_classes`` outputs on ``in_chans``-channel images in [0, 1]."""
    if arch.startswith("timm/"):
        return create_timm_model(arch.removeprefix("timm/"), num_classes, in_chans, **kwargs)
    if arch not in _REGISTRY:
        raise ValueError(f"unknown model architecture {arch!r}; known: {', '.join(list_models())}")
    return _REGISTRY[arch](num_classes=num_classes, in_chans=in_chans, **kwargs)


class Normalize(nn.Module):
    """(x − mean) / std per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Resize(nn.Module):
    """Bilinear resize to ``size``×``size`` (e.g. CIFAR-10 32 → 224 for ViT-B/16)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == self.size and x.shape[-2] == self.size:
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)


@register_model("digits_cnn")
def digits_cnn(num_classes: int, in_chans: int = 1, width: int = 16) -> nn.Module:
    """Two 3×3 conv layers (the second with stride 2) and two linear layers for 8×8 images (≈ 70 k parameters)."""
    return nn.Sequential(
        Normalize([0.5] * in_chans, [0.5] * in_chans),
        nn.Conv2d(in_chans, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * width * 16, 128), nn.ReLU(),
        nn.Linear(128, num_classes),
    )


def create_timm_model(
    name: str, num_classes: int, in_chans: int, input_size: int | None = None,
    weights: str | None = None, pretrained: bool = False,
) -> nn.Module:
    """A timm backbone behind resize + its own normalization.

    ``weights`` is a local checkpoint file (``.safetensors``/``.pth``); a classification head of
    another size is left freshly initialised (e.g. an estimator initialised from a classifier).
    ``pretrained=True`` without a file reads the Hugging Face cache (set ``HF_HUB_OFFLINE=1`` on
    machines without network).
    """
    import timm

    backbone = timm.create_model(name, pretrained=pretrained and weights is None, num_classes=num_classes,
                                 in_chans=in_chans)
    if weights is not None:
        load_backbone_weights(backbone, weights)
    cfg = backbone.pretrained_cfg
    size = input_size or cfg.get("input_size", (in_chans, 224, 224))[-1]
    return nn.Sequential(Resize(size), Normalize(*_channel_stats(cfg, in_chans)), backbone)


def _channel_stats(cfg: dict, in_chans: int) -> tuple[list[float], list[float]]:
    """The backbone's normalization mean/std, averaged over channels when ``in_chans`` differs."""
    mean, std = list(cfg.get("mean", (0.5,) * in_chans)), list(cfg.get("std", (0.5,) * in_chans))
    if len(mean) != in_chans:
        mean, std = [sum(mean) / len(mean)] * in_chans, [sum(std) / len(std)] * in_chans
    return mean, std


def load_backbone_weights(backbone: nn.Module, weights: str | Path) -> None:
    """Load a timm checkpoint file; only the classifier head may be missing or of another shape."""
    state = read_state_dict(weights)
    own = backbone.state_dict()
    head = backbone.pretrained_cfg.get("classifier", "head")
    head_keys = {k for k in own if k.startswith(f"{head}.")}
    state = {k: v for k, v in state.items() if not (k in head_keys and v.shape != own[k].shape)}
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if unexpected or set(missing) - head_keys:
        raise ValueError(f"{weights} does not fit {type(backbone).__name__}: "
                         f"missing {sorted(set(missing) - head_keys)[:5]}, unexpected {sorted(unexpected)[:5]}")


_STATE_DICT_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")  # wrappers of training checkpoints


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, never unpickling code.

    ``.safetensors`` files are read as such; any other file goes through ``torch.load(weights_only=True)``,
    which refuses pickled objects other than tensors and plain containers. A training checkpoint's
    weights are taken from its ``state_dict_ema``/``model_ema``/``state_dict``/``model`` entry, and
    ``module.``/``_orig_mod.`` prefixes (DDP, torch.compile) are removed, as timm does.
    """
    from timm.models import clean_state_dict

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model weights not found: {path}")
    if path.suffix == ".safetensors":
        import safetensors.torch

        return clean_state_dict(safetensors.torch.load_file(str(path)))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path} is not a plain tensor checkpoint and is not unpickled (torch.load with "
                         f"weights_only=True refused it: {str(error).splitlines()[0]}); "
                         "convert it to .safetensors from a trusted environment") from None
    for key in _STATE_DICT_KEYS:
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return clean_state_dict(checkpoint)

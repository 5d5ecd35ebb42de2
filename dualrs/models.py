"""Model builders and their registry (in the manner of timm's ``create_model``).

Every model takes images in [0, 1] (the space noise is added in) and returns logits; input
normalization and resizing live inside the model so that a smoothed model is simply f(x + δ).
Architectures are named: ``digits_cnn`` (small CNN for 8×8 digits, used both as classifier and
as variance estimator), ``digits_mlp`` (an MLP on the 64 pixels), ``cifar_resnet110`` (the CIFAR ResNet
of Cohen et al. 2019, the paper's CIFAR-10 variance estimator), ``cifar_resnet20`` (its depth-20 variant)
``timm/<model name>`` (any timm backbone, e.g. the paper's ImageNet classifier ``timm/beit_large_patch16_512``
or its ImageNet estimator ``timm/resnet50``) or ``hf/<transformers class>`` (a Hugging Face image classifier
read from a local model folder, e.g. ``hf/ViTForImageClassification`` for the CIFAR-10 ViT-B/16 of
Carlini et al. 2023).
"""
from __future__ import annotations

import inspect
import json
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from dualrs.plugins import MODELS_GROUP, load_plugin, plugin_names
from dualrs.validation import NonFiniteError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a builder ``fn(num_classes, in_chans, **kwargs)`` under ``name``."""
    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = fn
        return fn
    return decorator


def list_models() -> list[str]:
    """Registered builders, those installed packages declare (entry point group ``dualrs.models``), and the
    timm / transformers families."""
    return sorted({*_REGISTRY, *plugin_names(MODELS_GROUP)}) + ["timm/<name>", "hf/<transformers class>"]


def create_model(arch: str, num_classes: int, in_chans: int, **kwargs) -> nn.Module:
    """Build ``arch`` for ``num_classes`` outputs on ``in_chans``-channel images in [0, 1]."""
    if arch.startswith("timm/"):
        return create_timm_model(arch.removeprefix("timm/"), num_classes, in_chans, **kwargs)
    if arch.startswith("hf/"):
        return create_hf_model(arch.removeprefix("hf/"), num_classes, in_chans, **kwargs)
    if arch in _REGISTRY:
        return build(arch, _REGISTRY[arch], num_classes, in_chans, kwargs)
    if arch in plugin_names(MODELS_GROUP):
        return build(arch, load_plugin(MODELS_GROUP, arch), num_classes, in_chans, kwargs)
    raise ValueError(f"unknown model architecture {arch!r}; known: {', '.join(list_models())}")


def build(arch: str, builder: Callable[..., nn.Module], num_classes: int, in_chans: int,
          options: dict[str, Any]) -> nn.Module:
    """``builder(num_classes, in_chans, **options)``; an option it does not take, or a value it cannot build
    with, is one ValueError naming the architecture (not a TypeError from inside the builder)."""
    parameters = inspect.signature(builder).parameters
    takes = [name for name in parameters if name not in ("num_classes", "in_chans")]
    unknown = sorted(set(options) - set(takes))
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        raise ValueError(f"architecture {arch!r} takes no option {', '.join(map(repr, unknown))}; its options: "
                         f"{', '.join(takes) or 'none'}")
    try:
        return builder(num_classes=num_classes, in_chans=in_chans, **options)
    except (RuntimeError, TypeError, ValueError) as error:
        raise ValueError(f"architecture {arch!r} cannot be built with options {options}: {error}") from None


def enable_grad_checkpointing(model: nn.Module) -> None:
    """Recompute activations in backward in every submodule that offers it (timm's
    ``set_grad_checkpointing``); refuse a model that offers none."""
    found = [module for module in model.modules() if hasattr(module, "set_grad_checkpointing")]
    if not found:
        raise ValueError(f"{type(model).__name__} offers no gradient checkpointing (timm's set_grad_checkpointing); "
                         "turn grad_checkpointing off for it")
    for module in found:
        module.set_grad_checkpointing(True)


class Autocast(nn.Module):
    """``model`` under autocast to ``dtype`` on its inputs' device, logits returned in float32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.model(x).float()


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


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d`` that hands on an input already of the output size as it is: the same values
    (each window is one pixel), without the CPU kernel's per-window loop, a third of the digits CNN's
    forward time on 8×8 digits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == _pair(self.output_size):
            return x
        return super().forward(x)


@register_model("digits_cnn")
def digits_cnn(num_classes: int, in_chans: int = 1, width: int = 16) -> nn.Module:
    """Two 3×3 conv layers (the second with stride 2), average pooling to 4×4 (the identity on 8×8
    images; larger, upsampled digits are pooled) and two linear layers (≈ 70 k parameters)."""
    return nn.Sequential(
        Normalize([0.5] * in_chans, [0.5] * in_chans),
        nn.Conv2d(in_chans, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
        AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(2 * width * 16, 128), nn.ReLU(),
        nn.Linear(128, num_classes),
    )


@register_model("digits_mlp")
def digits_mlp(num_classes: int, in_chans: int = 1, width: int = 128) -> nn.Module:
    """Two hidden linear layers on the 64 pixels of an 8×8 image (≈ 25 k parameters): the second digits
    estimator of the architecture ablation (Sun et al., Sec. 6 and App.)."""
    return nn.Sequential(
        Normalize([0.5] * in_chans, [0.5] * in_chans),
        nn.Flatten(),
        nn.Linear(in_chans * 64, width), nn.ReLU(),
        nn.Linear(width, width), nn.ReLU(),
        nn.Linear(width, num_classes),
    )


class BasicBlock(nn.Module):
    """x ↦ relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)), shortcut a strided 1×1 conv + BN on a shape change."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


# CIFAR-10 channel statistics, as used by Cohen et al.'s CIFAR models.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


@register_model("cifar_resnet110")
def cifar_resnet(num_classes: int, in_chans: int = 3, depth: int = 110) -> nn.Module:
    """The CIFAR ResNet of He et al. 2016 (Sec. 4.2) as Cohen et al. 2019 use it: a 3×3 stem, three
    stages of (depth − 2)/6 basic blocks with 16/32/64 channels (stride 2 between stages), global
    average pooling and a linear head. ``depth=110`` (18 blocks per stage, ≈ 1.7 M parameters) is the
    paper's CIFAR-10 variance estimator (Sun et al., Sec. 6 and App. B)."""
    if (depth - 2) % 6 != 0 or depth < 8:
        raise ValueError(f"cifar_resnet depth must be 6k + 2 with k >= 1, got {depth}")
    blocks = (depth - 2) // 6
    layers: list[nn.Module] = [nn.Conv2d(in_chans, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    in_planes = 16
    for planes, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(blocks):
            layers.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
            in_planes = planes
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if in_chans == 3 else ([0.5] * in_chans, [0.5] * in_chans)
    return nn.Sequential(Normalize(mean, std), *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, num_classes))


@register_model("cifar_resnet20")
def cifar_resnet20(num_classes: int, in_chans: int = 3) -> nn.Module:
    """:func:`cifar_resnet` of depth 20 (3 blocks per stage, ≈ 0.27 M parameters): the smaller CIFAR-10
    estimator of the architecture ablation (Sun et al., Sec. 6 and App.)."""
    return cifar_resnet(num_classes, in_chans, depth=20)


def create_timm_model(
    name: str, num_classes: int, in_chans: int, input_size: int | None = None,
    weights: str | None = None, pretrained: bool = False, reinit_head: bool = False, **timm_kwargs: Any,
) -> nn.Module:
    """A timm backbone behind resize + its own normalization.

    ``weights`` is a local timm checkpoint file (``.safetensors``/``.pth``) whose classification head must
    have ``num_classes`` outputs; ``reinit_head=True`` loads the backbone only and leaves the head freshly
    initialised (an estimator initialised from a classifier). ``pretrained=True`` without a file reads the
    Hugging Face cache (set ``HF_HUB_OFFLINE=1`` on machines without network). ``timm_kwargs`` go to
    ``timm.create_model`` (e.g. ``img_size``, ``drop_path_rate``).
    """
    import timm

    arch = f"timm/{name}"
    if weights is not None and Path(weights).is_dir():
        raise ValueError(_folder_for_timm(Path(weights), arch))
    state = read_state_dict(weights) if weights is not None else None  # a bad file is refused before the build
    if not timm.is_model(name) and timm.models.parse_model_name(name)[0] is None:
        raise ValueError(f"unknown model architecture {arch!r}: timm {timm.__version__} has no model {name!r}")
    backbone = timm.create_model(name, pretrained=pretrained and weights is None, num_classes=num_classes,
                                 in_chans=in_chans, **timm_kwargs)
    if state is not None:
        load_backbone_weights(backbone, state, weights, reinit_head=reinit_head)
    elif pretrained and not reinit_head:
        _check_pretrained_head(backbone, arch, num_classes)
    size = _timm_input_size(backbone, arch, input_size)
    return nn.Sequential(Resize(size), Normalize(*_channel_stats(backbone.pretrained_cfg, in_chans)), backbone)


def _folder_for_timm(folder: Path, arch: str) -> str:
    """The error for a Hugging Face model folder given to a timm architecture."""
    config = folder / "config.json"
    classes = (json.loads(config.read_text()).get("architectures") or []) if config.is_file() else []
    hint = f"hf/{classes[0]}" if classes else "hf/<class in its config.json 'architectures'>"
    return (f"weights {folder} is a folder, but {arch} takes a timm checkpoint file; a Hugging Face model folder "
            f"(config.json + model.safetensors or pytorch_model.bin) loads with arch {hint!r}")


def _check_pretrained_head(backbone: nn.Module, arch: str, num_classes: int) -> None:
    """Refuse timm's hub weights whose head timm dropped for another number of classes."""
    held = backbone.pretrained_cfg.get("num_classes")
    if held and held != num_classes:
        raise ValueError(f"pretrained {arch} has a {held}-class classification head but the dataset has "
                         f"{num_classes} classes; pass reinit_head=True to initialise only the backbone")


def _positive_size(input_size: Any, arch: str) -> int:
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"option 'input_size' of {arch} must be a positive int, got {input_size!r}")
    return input_size


def _timm_input_size(backbone: nn.Module, arch: str, input_size: int | None) -> int:
    """``input_size``, or the backbone's own, checked against what its patch embedding accepts."""
    patch_embed = getattr(backbone, "patch_embed", None)
    img_size = getattr(patch_embed, "img_size", None)
    own = img_size[-1] if img_size is not None else backbone.pretrained_cfg.get("input_size", (0, 224, 224))[-1]
    size = _positive_size(own if input_size is None else input_size, arch)
    if img_size is None:
        return size
    if patch_embed.strict_img_size and (size, size) != tuple(img_size):
        raise ValueError(f"option 'input_size' of {arch} must be {img_size[0]} (its patch embedding takes "
                         f"{img_size[0]}x{img_size[1]} images only), got {size}")
    patch = patch_embed.patch_size[0]
    if not patch_embed.dynamic_img_pad and size % patch:
        raise ValueError(f"option 'input_size' of {arch} must be a multiple of its patch size {patch}, got {size}")
    return size


class HFLogits(nn.Module):
    """A transformers image classifier as a map from pixel values to logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


_HF_HEAD = "classifier."  # the head of transformers' *ForImageClassification models


def create_hf_model(
    name: str, num_classes: int, in_chans: int, weights: str | None = None, config: dict | None = None,
    mean: Sequence[float] | None = None, std: Sequence[float] | None = None, input_size: int | None = None,
    reinit_head: bool = False,
) -> nn.Module:
    """A transformers image classifier (``name``, e.g. ``ViTForImageClassification``) behind resize + normalization.

    ``weights`` is a local Hugging Face model folder (config.json + model.safetensors or pytorch_model.bin),
    loaded by transformers itself: the model computes exactly what its users computed with it (e.g. the
    CIFAR-10 ViT-B/16 of Carlini et al. 2023), with no key conversion to maintain (a conversion to timm's
    ``vit_base_patch16_224`` would also have to carry config.json's settings, e.g. ``layer_norm_eps`` 1e-12
    against timm's 1e-6, and the preprocessor's normalization). Its normalization is the
    image_mean/image_std of the folder's preprocessor_config.json unless ``mean``/``std`` are given; its
    input size is config.json's image_size. ``config`` (a config.json as a dict) with ``mean``/``std``
    builds the architecture without weights, as :func:`checkpoint_kwargs` records it in dualrs checkpoints.
    """
    arch = f"hf/{name}"
    cls = _hf_class(name)
    if weights is None and (config is None or mean is None or std is None):
        raise ValueError(f"{arch} needs weights (a Hugging Face model folder), or config, mean and std")
    if weights is not None and not (Path(weights) / "config.json").is_file():
        raise ValueError(f"{weights} is not a Hugging Face model folder (no config.json), which {arch} needs")
    if mean is None or std is None:
        mean, std = _hf_normalization(Path(weights), in_chans)
    if weights is not None:
        model = _hf_from_folder(cls, Path(weights), num_classes, reinit_head)
    else:
        model = cls(cls.config_class.from_dict(config))
    if model.config.num_channels != in_chans:
        raise ValueError(f"{arch} takes {model.config.num_channels}-channel images but the dataset has {in_chans}")
    size = _hf_input_size(model.config, arch, input_size)
    return nn.Sequential(Resize(size), Normalize(mean, std), HFLogits(model.float()))


def _hf_class(name: str) -> type:
    import transformers

    cls = getattr(transformers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise ValueError(f"unknown transformers model class {name!r} (arch hf/{name}), "
                         "e.g. hf/ViTForImageClassification")
    return cls


def _hf_from_folder(cls: type, folder: Path, num_classes: int, reinit_head: bool) -> nn.Module:
    """``cls`` with every weight of a local model folder, its head of ``num_classes`` outputs unless ``reinit_head``."""
    config_file = folder / "config.json"
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"{config_file} is not a JSON object: {error}") from None
    if model_type != cls.config_class.model_type:
        raise ValueError(f"{folder} holds a {model_type!r} model, not a {cls.__name__}")
    held = cls.config_class.from_pretrained(str(folder)).num_labels
    if held != num_classes and not reinit_head:
        raise _head_mismatch(folder, held, num_classes)
    head = {"id2label": {i: str(i) for i in range(num_classes)}, "ignore_mismatched_sizes": True} if reinit_head else {}
    try:
        model, info = cls.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32,
                                          output_loading_info=True, **head)
    except Exception as error:  # transformers and safetensors fail on a bad weight file with many types
        raise ValueError(f"the weights of Hugging Face model folder {folder} cannot be read, or are truncated: "
                         f"{_short_cause(error)}") from None
    missing = sorted(k for k in info["missing_keys"] if not (reinit_head and k.startswith(_HF_HEAD)))
    if missing:
        raise ValueError(f"{folder} does not fit {cls.__name__}: missing {missing[:5]}")
    return model


def _hf_normalization(folder: Path, in_chans: int) -> tuple[list[float], list[float]]:
    """image_mean/image_std of the folder's preprocessor_config.json (else config.json), as its image processor."""
    for name in ("preprocessor_config.json", "config.json"):
        path = folder / name
        settings = json.loads(path.read_text()) if path.is_file() else {}
        if settings.get("do_normalize") is False:
            return [0.0] * in_chans, [1.0] * in_chans
        if "image_mean" in settings and "image_std" in settings:
            return _per_channel(settings["image_mean"], in_chans), _per_channel(settings["image_std"], in_chans)
    raise ValueError(f"{folder} gives no input normalization: neither preprocessor_config.json nor config.json "
                     "has image_mean and image_std; add the model's preprocessor_config.json or set the options "
                     "mean and std")


def _per_channel(value: float | Sequence[float], in_chans: int) -> list[float]:
    return [float(value)] * in_chans if isinstance(value, (int, float)) else [float(v) for v in value]


def _hf_input_size(config: Any, arch: str, input_size: int | None) -> int:
    """``input_size``, which must be the config's image_size (transformers refuses other sizes)."""
    image_size = config.image_size
    size = _positive_size(image_size if input_size is None else input_size, arch)
    if size != image_size:
        raise ValueError(f"option 'input_size' of {arch} must be {image_size} (image_size in its config.json), "
                         f"got {size}")
    return size


def checkpoint_kwargs(model: nn.Module) -> dict[str, Any]:
    """Builder options that rebuild ``model`` with no weights source: a transformers classifier's config and
    normalization (what a dualrs checkpoint's model_kwargs need), nothing for other models."""
    if not (isinstance(model, nn.Sequential) and isinstance(model[-1], HFLogits)):
        return {}
    resize, normalize, logits = model
    return {"config": logits.model.config.to_dict(), "mean": normalize.mean.flatten().tolist(),
            "std": normalize.std.flatten().tolist(), "input_size": resize.size}


def _channel_stats(cfg: dict, in_chans: int) -> tuple[list[float], list[float]]:
    """The backbone's normalization mean/std, averaged over channels when ``in_chans`` differs."""
    mean, std = list(cfg.get("mean", (0.5,) * in_chans)), list(cfg.get("std", (0.5,) * in_chans))
    if len(mean) != in_chans:
        mean, std = [sum(mean) / len(mean)] * in_chans, [sum(std) / len(std)] * in_chans
    return mean, std


def _head_keys(backbone: nn.Module) -> set[str]:
    """State-dict keys of the backbone's classification head(s), as its pretrained config names them."""
    names = backbone.pretrained_cfg.get("classifier", "head")
    prefixes = tuple(f"{n}." for n in ([names] if isinstance(names, str) else names))
    return {k for k in backbone.state_dict() if k.startswith(prefixes)}


def _head_mismatch(weights: str | Path, held: int | None, num_classes: int) -> ValueError:
    """The one error for a checkpoint whose classification head does not give the dataset's classes."""
    head = f"a {held}-class classification head" if held is not None else "no classification head"
    return ValueError(f"{weights} has {head} but the dataset has {num_classes} classes; use a classifier "
                      f"finetuned on this dataset's {num_classes} classes (reinit_head=True loads only the "
                      "backbone and leaves a random head, which is for initialising an estimator)")


def load_backbone_weights(
    backbone: nn.Module, state: dict[str, torch.Tensor], weights: str | Path, reinit_head: bool = False,
) -> None:
    """Load ``state``, read from the timm checkpoint file ``weights``, into ``backbone``.

    Every weight but the classification head's must be there with its shape; the head must match the
    backbone's (else :func:`_head_mismatch`) unless ``reinit_head``, which keeps the fresh initialisation.
    """
    check_finite_weights(state, f"weights {weights}")
    own, head_keys = backbone.state_dict(), _head_keys(backbone)
    missing, unexpected = sorted(set(own) - head_keys - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{weights} does not fit {type(backbone).__name__}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    if reinit_head:
        state = {k: v for k, v in state.items() if k not in head_keys}
    elif any(k not in state or state[k].shape != own[k].shape for k in head_keys):
        held = next((v.shape[0] for k, v in sorted(state.items()) if k in head_keys and k.endswith("weight")), None)
        raise _head_mismatch(weights, held, backbone.num_classes)
    try:
        backbone.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise ValueError(f"{weights} does not fit {type(backbone).__name__}: {error}") from None


def check_finite_weights(tensors: nn.Module | dict[str, torch.Tensor], source: str) -> None:
    """Every floating-point parameter and buffer (or tensor of a state dict) must be finite: a NaN or ±inf
    weight makes every output meaningless. The error names ``source`` and the first offending tensors."""
    state = tensors.state_dict() if isinstance(tensors, nn.Module) else tensors
    bad = [name for name, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise NonFiniteError(f"{source} has non-finite weights (NaN or inf) in {len(bad)} tensor(s), e.g. {bad[:3]}")


def to_device(model: nn.Module, device: torch.device | str, source: str) -> nn.Module:
    """``model`` moved to ``device``; a device that cannot take it (no driver, out of memory, CUDA missing
    from this torch build) is one ``ValueError`` naming ``source``, the device and the reason."""
    try:
        return model.to(device)
    except (RuntimeError, AssertionError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{source} was read, but the model cannot be placed on device {str(device)!r}: {reason}") \
            from error


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file (:func:`read_foreign_state_dict`, which never unpickles code), with the
    ``module.``/``_orig_mod.`` prefixes of DDP and torch.compile removed, as timm does."""
    from timm.models import clean_state_dict

    return clean_state_dict(read_foreign_state_dict(path, "weights"))


_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")  # wrappers of training checkpoints
_TORCH_ADVICE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def read_foreign_state_dict(path: Path | str, what: str = "") -> dict[str, torch.Tensor]:
    """Tensors of a weight file dualrs did not write: ``.safetensors``, else a PyTorch pickle or zip read with
    ``torch.load(weights_only=True)``, which refuses pickled objects other than tensors and plain containers.
    A training checkpoint's weights are its ``state_dict_ema``/``model_ema``/``state_dict``/``model`` entry.
    A file that does not parse, or holds no state dict of tensors, is one ``ValueError`` naming ``what``
    (what the file is for, e.g. ``"weights"``) and ``path``."""
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{label} not found")
    try:
        if path.suffix == ".safetensors":
            content = safetensors.torch.load_file(str(path))
        else:
            content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{label} is not a plain tensor checkpoint and is not unpickled (torch.load with "
                         f"weights_only=True refused it: {_short_cause(error)}); if it holds more than tensors, "
                         "convert it to .safetensors from a trusted environment") from None
    except OSError:
        raise
    except Exception as error:  # a malformed file fails in either parser with any type: EOFError, RuntimeError, ...
        cause = "the file is empty" if path.stat().st_size == 0 else _short_cause(error)
        raise ValueError(f"{label} is not a safetensors or PyTorch checkpoint, or is truncated: {cause}") from None
    for key in _WRAPPER_KEYS:
        if isinstance(content, dict) and isinstance(content.get(key), dict):
            content = content[key]
            break
    if not isinstance(content, dict):
        raise ValueError(f"{label} is not a state dict of tensors: it holds a {type(content).__name__}")
    others = [k for k, v in content.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise ValueError(f"{label} is not a state dict of tensors: its entry {others[0]!r} is a "
                         f"{type(content[others[0]]).__name__}")
    return content


def _short_cause(error: Exception) -> str:
    """The error's type and first informative sentence (torch wraps the cause in advice that is not)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = next((line for line in lines if not line.startswith(_TORCH_ADVICE)), lines[0] if lines else "")
    text = text.split(". ")[0].rstrip(".")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__

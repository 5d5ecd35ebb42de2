"""Smoothed models from checkpoints: each base classifier behind its denoiser view at its σ, in the
inference arithmetic, checked against the dataset it is used on.

A classifier f for noise σ is smoothed as g(x) = argmax_c P(f(denoise_σ(x + δ)) = c), δ ~ N(0, σ²I)
(denoise_σ the identity without a diffusion denoiser, Carlini et al. 2023); :class:`Denoisers` builds
f ∘ denoise_σ, and the loaders below put these models together as Smooth, DualSmooth, CascadeSmooth or
Router.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dualrs.cascade import CascadeSmooth, Variant
from dualrs.dual import DualSmooth
from dualrs.io import load_checkpoint
from dualrs.models import Autocast
from dualrs.router import Expert, Router
from dualrs.smoothing import Smooth
from dualrs.validation import check_checkpoint

INFERENCE_DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def denoiser_precision(precision: str, device: torch.device) -> str:
    """The arithmetic of a diffusion denoiser's UNet: float16 autocast on CUDA; with ``precision`` bf16,
    bfloat16 autocast on a CPU for which oneDNN has bf16 kernels (native on AVX512-BF16 and AMX); else fp32."""
    if precision not in INFERENCE_DTYPES:
        raise ValueError(f"precision must be one of {sorted(INFERENCE_DTYPES)}, got {precision!r}")
    if device.type == "cuda":
        return "fp16"
    if device.type == "cpu" and precision == "bf16" and cpu_has_bf16_kernels():
        return "bf16"
    return "fp32"


def cpu_has_bf16_kernels() -> bool:
    """Whether oneDNN has bfloat16 kernels for this CPU (AVX512 and later)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def inference_precision(precision: str, device: torch.device) -> str:
    """The arithmetic models run in: ``precision`` on CUDA, float32 elsewhere."""
    if precision not in INFERENCE_DTYPES:
        raise ValueError(f"precision must be one of {sorted(INFERENCE_DTYPES)}, got {precision!r}")
    return precision if device.type == "cuda" else "fp32"


@dataclass(frozen=True)
class DataSpec:
    """What a checkpoint must fit: the dataset's registry name (for messages), its classes, input channels
    and, where known, the height and width of its inputs."""

    name: str
    num_classes: int
    in_chans: int
    input_size: tuple[int, int] | None = None


@dataclass(frozen=True)
class ExpertSpec:
    """An expert RS model on disk: its checkpoint, noise level and optional denoiser directory."""

    name: str
    sigma: float
    classifier: Path
    denoiser: Path | None = None


class Denoisers:
    """Lazily loaded diffusion denoiser, one view per σ sharing one UNet (Carlini et al. 2023), in
    :func:`denoiser_precision`; the models they feed run in ``precision`` (:func:`inference_precision`)."""

    def __init__(self, path: Path | None, device: torch.device, precision: str = "fp32"):
        self.path, self.device, self._views = path, device, {}
        self.dtype = INFERENCE_DTYPES[inference_precision(precision, device)]
        self.cpu_autocast = denoiser_precision(precision, device) == "bf16"

    def wrap(self, model: nn.Module, sigma: float) -> nn.Module:
        """f ↦ f ∘ denoise_σ when a denoiser is configured, else f (under autocast in bf16)."""
        if self.dtype is not None:
            model = Autocast(model, self.dtype)
        if self.path is None:
            return model
        from dualrs.denoise import DiffusionDenoiser

        if sigma not in self._views:
            if not self._views:
                self._views[sigma] = DiffusionDenoiser.from_pretrained(
                    self.path, sigma, cpu_autocast=self.cpu_autocast).to(self.device).eval()
            else:
                first = next(iter(self._views.values()))
                self._views[sigma] = DiffusionDenoiser(first.unet, first.alphas_cumprod, sigma, first.prediction_type,
                                                       cpu_autocast=self.cpu_autocast).to(self.device).eval()
            self._views[sigma].requires_grad_(False)
        return nn.Sequential(self._views[sigma], model)

    def wrap_all(self, models: Mapping[float, nn.Module]) -> dict[float, nn.Module]:
        """σ ↦ f_σ ∘ denoise_σ for each σ of ``models``, wrapped in the mapping's order."""
        return {s: self.wrap(model, s) for s, model in models.items()}


def load_classifier(path: Path | str, device: torch.device, data: DataSpec) -> tuple[nn.Module, dict]:
    """A classifier checkpoint and its metadata, refused unless it gives ``data``'s classes from its inputs."""
    model, meta = load_checkpoint(path, device)
    check_checkpoint(meta, path, data.num_classes, data.in_chans, f"a classifier of dataset {data.name!r}",
                     data.input_size)
    return model, meta


def load_classifier_files(
    paths: Iterable[Path | str], device: torch.device, data: DataSpec,
) -> tuple[dict[Path, nn.Module], int]:
    """Each distinct checkpoint loaded once, in order, and checked against ``data``; their common class count."""
    models, counts = {}, set()
    for path in dict.fromkeys(map(Path, paths)):
        models[path], meta = load_classifier(path, device, data)
        counts.add(meta["num_classes"])
    if len(counts) != 1:
        raise ValueError(f"classifiers disagree on the number of classes: {sorted(counts)}")
    return models, counts.pop()


def load_classifiers(
    classifiers: Mapping[float, Path | str], device: torch.device, data: DataSpec,
) -> tuple[dict[float, nn.Module], int]:
    """σ ↦ base classifier f_σ for a candidate set Σ (one model for the σ's sharing a checkpoint), in the
    mapping's order; their common class count."""
    models, num_classes = load_classifier_files(classifiers.values(), device, data)
    return {s: models[Path(path)] for s, path in classifiers.items()}, num_classes


def load_estimator(path: Path | str, sigmas: Sequence[float], device: torch.device, data: DataSpec) -> nn.Module:
    """A variance estimator over the candidates ``sigmas`` (ascending: its class k is the k-th smallest σ),
    refused unless its metadata names exactly these σ's and it reads ``data``'s inputs."""
    model, meta = load_checkpoint(path, device)
    if meta.get("sigmas") != list(sigmas):
        raise ValueError(f"estimator {path} was trained for sigmas {meta.get('sigmas')}, "
                         f"but classifiers are given for {list(sigmas)}")
    check_checkpoint(meta, path, len(sigmas), data.in_chans,
                     f"an estimator over sigmas {list(sigmas)} on dataset {data.name!r}", data.input_size)
    return model


def load_smooth(
    classifier: Path | str, sigma: float, denoiser: Path | None, device: torch.device, data: DataSpec,
    precision: str = "fp32",
) -> Smooth:
    """Standard RS at σ: the classifier checkpoint behind the denoiser's view at σ, in ``precision``."""
    model, meta = load_classifier(classifier, device, data)
    return Smooth(Denoisers(denoiser, device, precision).wrap(model, sigma), meta["num_classes"], sigma)


def load_dual(
    estimator: Path | str, classifiers: Mapping[float, Path | str], sigma_e: float, denoiser: Path | None,
    device: torch.device, data: DataSpec, precision: str = "fp32",
) -> DualSmooth:
    """DualSmooth from checkpoints for ``data``, its models in ``precision``: the estimator at σ_e and each
    σ's classifier at σ, behind the denoiser's views; the estimator's class k is the k-th smallest σ."""
    denoisers = Denoisers(denoiser, device, precision)
    sigmas = sorted(float(s) for s in classifiers)
    estimator_model = load_estimator(estimator, sigmas, device, data)
    models, num_classes = load_classifiers(classifiers, device, data)
    bases = denoisers.wrap_all({s: models[s] for s in sigmas})
    return DualSmooth(denoisers.wrap(estimator_model, sigma_e), bases, sigma_e, num_classes)


def load_cascade(
    classifiers: Mapping[float, Path | str], denoiser: Path | None, device: torch.device, data: DataSpec,
    threshold: float, variant: Variant, precision: str = "fp32",
) -> CascadeSmooth:
    """Cascaded smoothing (:mod:`dualrs.cascade`) over each σ's classifier at σ behind the denoiser's views,
    in ``precision``."""
    denoisers = Denoisers(denoiser, device, precision)
    models, num_classes = load_classifiers(classifiers, device, data)
    return CascadeSmooth(denoisers.wrap_all(models), num_classes, threshold, variant)


def load_router(
    router: Path | str, experts: Sequence[ExpertSpec], sigma_e: float, denoiser: Path | None,
    device: torch.device, data: DataSpec, precision: str = "fp32",
) -> Router:
    """A Router from checkpoints for ``data``: the router at σ_e behind ``denoiser``'s view, each expert's
    classifier at its σ behind its own denoiser's (one UNet per denoiser directory), in ``precision``; the
    router's class k is ``experts[k]``."""
    router_model, router_meta = load_checkpoint(router, device)
    names = [e.name for e in experts]
    if router_meta.get("experts") != names:
        raise ValueError(f"router {router} was trained for experts {router_meta.get('experts')}, "
                         f"but experts {names} are given")
    check_checkpoint(router_meta, router, len(experts), data.in_chans, f"a router over experts {names}",
                     data.input_size)
    loaded, num_classes = load_classifier_files([e.classifier for e in experts], device, data)
    denoisers: dict[Path | None, Denoisers] = {}

    def wrap(model: nn.Module, sigma: float, path: Path | None) -> nn.Module:
        return denoisers.setdefault(path, Denoisers(path, device, precision)).wrap(model, sigma)

    models = [Expert(e.name, e.sigma, wrap(loaded[Path(e.classifier)], e.sigma, e.denoiser)) for e in experts]
    return Router(wrap(router_model, sigma_e, denoiser), models, sigma_e, num_classes)

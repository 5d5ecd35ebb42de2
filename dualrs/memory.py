"""Device memory of the pipeline's GPU jobs, measured on PyTorch's meta device.

On the meta device a tensor has a shape and a dtype but no data, so the paper's models (a 552M-parameter
UNet at 256×256, BEiT-L/16 at 512×512) run forward, backward and an optimizer step in seconds on a CPU.
:class:`LiveBytes`, a ``TorchDispatchMode``, sees every tensor an operator returns and keeps the bytes of
the storages still referenced: their maximum is the peak of what the job asks the CUDA caching allocator
for. A GPU holds more: the allocator rounds and fragments (``ALLOCATOR_MARGIN``) and the CUDA context and
kernels take ``CONTEXT_GIB``; :func:`device_gib` adds both.

Mixed precision is measured on a copy of the model cast to the autocast dtype (activations and their
gradients in 16 bits) plus, in training, the float32 gradients and AdamW step that autocast keeps
(:func:`optimizer_bytes`).
"""
from __future__ import annotations

import copy
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import UNet2DModel
from diffusers.utils import logging as diffusers_logging
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from dualrs.models import enable_grad_checkpointing

ALLOCATOR_MARGIN = 0.15
CONTEXT_GIB = 1.0
GIB = 2**30
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages created inside the mode and still alive: ``live`` now, ``peak`` so far.
    Storages of ``resident`` tensors (weights made before) are not counted, nor are views of them."""

    def __init__(self, resident: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}
        self._resident = {t.untyped_storage()._cdata for t in resident}

    def _add(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._sizes or key in self._resident:
            return
        self._sizes[key] = size = storage.nbytes()
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._release, key)

    def _release(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in tree_flatten(out)[0]:
            if isinstance(item, torch.Tensor):
                self._add(item)
        return out


def parameter_bytes(model: nn.Module, bytes_per_element: int = 4) -> int:
    """Bytes of ``model``'s parameters and buffers at ``bytes_per_element`` (float32: 4)."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() for t in tensors) * bytes_per_element


def peak_bytes(step: Callable[[], Any], resident: Iterable[torch.Tensor] = ()) -> int:
    """Peak live bytes of the tensors ``step`` creates, less the ``resident`` ones (weights, counted apart)."""
    tracker = LiveBytes(resident)
    with tracker:
        step()
        peak = tracker.peak
    return peak


@dataclass(frozen=True)
class Stage:
    """One model's pass in a job: a forward under ``torch.no_grad`` (``train=False``) or forward, backward and
    an AdamW step (``train=True``) on ``batch`` inputs of ``input_shape``, in ``precision``.

    ``call(model, x)`` maps an input batch to the model's output (default ``model(x)``); ``grad_checkpointing``
    recomputes activations in backward (timm models' ``set_grad_checkpointing``)."""

    name: str
    model: nn.Module
    input_shape: tuple[int, ...]
    batch: int
    train: bool = False
    precision: str = "fp32"
    grad_checkpointing: bool = False
    call: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = field(default=None, compare=False)

    def activation_bytes(self) -> int:
        """Peak bytes of everything but the float32 weights (and, in training, their gradients and moments)."""
        dtype = PRECISIONS[self.precision]
        model = self.model if dtype == torch.float32 else cast_copy(self.model, dtype)
        if self.grad_checkpointing:
            enable_grad_checkpointing(model)
        run = self.call or (lambda m, x: m(x))

        def step() -> None:
            x = torch.randn(self.batch, *self.input_shape, device="meta", dtype=dtype)
            if not self.train:
                with torch.no_grad():
                    run(model, x)
                return
            run(model, x).float().sum().backward()
            if dtype == torch.float32:
                adamw_step(model)

        peak = peak_bytes(step, [*model.parameters(), *model.buffers()])
        if self.train and dtype != torch.float32:
            peak += optimizer_bytes(self.model)
        return peak


def cast_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``model`` in ``dtype`` (diffusers' advice to cast at load time concerns real weights)."""
    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        return copy.deepcopy(model).to(dtype)
    finally:
        diffusers_logging.set_verbosity(level)


def adamw_step(model: nn.Module) -> None:
    """One AdamW step as on CUDA (``foreach``: temporaries for all parameters at once)."""
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], foreach=True).step()


def optimizer_bytes(model: nn.Module) -> int:
    """Peak bytes of float32 gradients plus an AdamW step on ``model``'s float32 weights (mixed precision
    keeps both in float32); counted on top of the 16-bit pass, which is conservative."""
    def step() -> None:
        for p in model.parameters():
            p.grad = torch.zeros_like(p) if p.requires_grad else None
        adamw_step(model)
        for p in model.parameters():
            p.grad = None

    return peak_bytes(step, [*model.parameters(), *model.buffers()])


@dataclass(frozen=True)
class JobMemory:
    """A job's models resident at once and its stages run one after the other."""

    job: str
    models: Sequence[nn.Module]
    stages: Sequence[Stage]

    def tensor_bytes(self) -> int:
        """float32 weights of all models plus the largest stage's activations."""
        weights = sum(parameter_bytes(m) for m in self.models)
        return weights + max(stage.activation_bytes() for stage in self.stages)


def device_gib(tensor_bytes: int) -> float:
    """GiB a GPU needs for ``tensor_bytes`` of tensors: allocator margin plus the CUDA context."""
    return tensor_bytes * (1 + ALLOCATOR_MARGIN) / GIB + CONTEXT_GIB


def build_on_meta(builder: Callable[[], nn.Module]) -> nn.Module:
    """``builder()`` with every tensor on the meta device (no memory, no data)."""
    with torch.device("meta"):
        return builder().eval()


def denoiser_call(timestep: int) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """A diffusers UNet's one denoising call at ``timestep`` (the work of :class:`dualrs.denoise.DiffusionDenoiser`)."""
    return lambda unet, x: unet(x, timestep).sample[:, : x.shape[1]]


# The converted checkpoint each paper experiment's denoiser.path holds (config/config.yaml), and the input
# shape and classes of their datasets (ImageNet: the configured crop).
DENOISER_PRESETS = {"cifar10": "cifar10_uncond_50M_500K", "imagenet": "256x256_diffusion_uncond"}
DATASETS = {"cifar10": ((3, 32, 32), 10), "imagenet": (None, 1000)}


def configured_jobs(config: Mapping[str, Any], name: str) -> list[JobMemory]:
    """:func:`experiment_jobs` of the paper experiment ``name`` in a pipeline ``config``, its models built on
    the meta device from the configured architectures and the denoiser's converter preset."""
    from dualrs.convert import PRESETS, unet_config
    from dualrs.models import create_model

    experiment = config["experiments"][name]
    dataset = experiment["data"]
    if dataset not in DATASETS or name not in DENOISER_PRESETS:
        raise ValueError(f"experiment {name!r}: sizes are known for {sorted(DENOISER_PRESETS)} only")
    shape, num_classes = DATASETS[dataset]
    if shape is None:
        crop = int(config["data"][dataset].get("crop", 224))
        shape = (3, crop, crop)
    denoiser = build_on_meta(lambda: UNet2DModel.from_config(unet_config(PRESETS[DENOISER_PRESETS[name]])))
    classifier = build_on_meta(lambda: create_model(experiment["classifier"]["arch"], num_classes, shape[0],
                                                    **experiment["classifier"].get("options", {})))
    estimator = build_on_meta(lambda: create_model(experiment["estimator"]["arch"], len(experiment["sigmas"]),
                                                   shape[0], **experiment["estimator"].get("options", {})))
    return experiment_jobs(experiment, shape, denoiser, classifier, estimator)


def experiment_jobs(
    experiment: Mapping[str, Any], input_shape: tuple[int, ...], denoiser: nn.Module | None, classifier: nn.Module,
    estimator: nn.Module,
) -> list[JobMemory]:
    """The GPU jobs of one experiment at its configured sizes (config/config.yaml): global and dual
    certification (and labelling, which is certification at ``label.n``), estimator training on
    ``batch_size × copies`` views, classifier finetuning. Models are built on the meta device by the caller.

    Inference batches run the denoiser in float16 (DiffusionDenoiser's autocast on CUDA) and the classifier
    in ``experiment['precision']`` (absent: bf16); training runs in ``train.precision`` with micro-batches of
    ``train.micro_batch_size`` (absent: the whole batch)."""
    inference = experiment.get("precision", "bf16")
    batch = int(experiment["batch_size"])
    est_train = experiment["estimator"].get("train", {})
    copies = int(experiment["estimator"].get("copies", 2))
    finetune = experiment.get("finetune", {})

    def denoise(b: int) -> list[Stage]:
        if denoiser is None:
            return []
        return [Stage("denoiser", denoiser, input_shape, b, precision="fp16", call=denoiser_call(10))]

    def trained(name: str, model: nn.Module, settings: Mapping[str, Any], views_per_input: int = 1) -> Stage:
        batch_size = int(settings.get("batch_size", 128))
        micro = min(int(settings.get("micro_batch_size") or batch_size), batch_size)
        return Stage(name, model, input_shape, micro * views_per_input, train=True,
                     precision=settings.get("precision", "fp32"),
                     grad_checkpointing=bool(settings.get("grad_checkpointing", False)))

    denoisers = [denoiser] if denoiser is not None else []
    estimator_step = trained("estimator", estimator, est_train, copies)
    finetune_step = trained("classifier", classifier, finetune)
    return [
        JobMemory("certify (global sigma) / label", [*denoisers, classifier],
                  [*denoise(batch), Stage("classifier", classifier, input_shape, batch, precision=inference)]),
        JobMemory("certify (dual)", [*denoisers, estimator, classifier],
                  [*denoise(batch), Stage("estimator", estimator, input_shape, batch, precision=inference),
                   Stage("classifier", classifier, input_shape, batch, precision=inference)]),
        JobMemory("train estimator", [*denoisers, estimator],
                  [*denoise(estimator_step.batch), estimator_step]),
        JobMemory("finetune classifier", [*denoisers, classifier],
                  [*denoise(finetune_step.batch), finetune_step]),
    ]

"""GPU-hours of the paper experiments' stages: floating-point operations counted, a throughput assumed.

:func:`forward_flops` runs a model once on the meta device under ``torch.utils.flop_counter.FlopCounterMode``
(matrix products and convolutions, 2 FLOPs per multiply-add). A stage's work is its number of network
evaluations times the FLOPs per evaluation, a training step counting 3 forward passes (backward ≈ 2×
forward). Hours = FLOPs / throughput: the throughput a GPU achieves is measured, not counted: pass yours
(``scripts/gpu_check.py`` prints it); :data:`ASSUMED_TFLOPS` is the default when none is given.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dualrs.memory import DATASETS, DENOISER_PRESETS, build_on_meta, denoiser_call

# Achieved TFLOP/s of one A100 running these networks in 16-bit: a third of its 312 TFLOP/s dense peak.
ASSUMED_TFLOPS = 100.0
# Images in the official splits (CIFAR-10: 50,000 / 10,000; ImageNet-1k: 1,281,167 / 50,000).
SPLIT_SIZES = {"cifar10": {"train": 50_000, "test": 10_000}, "imagenet": {"train": 1_281_167, "test": 50_000}}


def forward_flops(model: nn.Module, input_shape: tuple[int, ...],
                  call: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None) -> int:
    """FLOPs of one forward pass of ``model`` (built on the meta device) on one input of ``input_shape``."""
    x = torch.randn(1, *input_shape, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        (call or (lambda m, batch: m(batch)))(model, x)
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class StageCompute:
    """A pipeline stage's total FLOPs: ``evaluations`` network passes of ``flops_per_evaluation`` each."""

    stage: str
    evaluations: int
    flops_per_evaluation: int

    @property
    def flops(self) -> int:
        return self.evaluations * self.flops_per_evaluation

    def gpu_hours(self, tflops: float = ASSUMED_TFLOPS) -> float:
        return self.flops / (tflops * 1e12) / 3600


def experiment_compute(config: Mapping[str, Any], name: str) -> list[StageCompute]:
    """Every GPU stage of the paper experiment ``name`` at its configured sizes (test and training subsets
    from ``data.<dataset>``'s ``every`` options, n0 + n draws per certificate, all σ of Σ; the cascade's
    count assumes every stage runs, an upper bound). Dual certification runs the denoiser twice (at σ_e for
    the estimator, at σ̂ for the classifier)."""
    from diffusers import UNet2DModel

    from dualrs.convert import PRESETS, unet_config
    from dualrs.models import create_model

    exp = config["experiments"][name]
    dataset, data = exp["data"], config["data"][exp["data"]]
    shape, num_classes = DATASETS[dataset]
    shape = shape or (3, int(data.get("crop", 224)), int(data.get("crop", 224)))
    unet = build_on_meta(lambda: UNet2DModel.from_config(unet_config(PRESETS[DENOISER_PRESETS[name]])))
    denoise = forward_flops(unet, shape, denoiser_call(10))
    classify = forward_flops(build_on_meta(lambda: create_model(
        exp["classifier"]["arch"], num_classes, shape[0], **exp["classifier"].get("options", {}))), shape)
    estimate = forward_flops(build_on_meta(lambda: create_model(
        exp["estimator"]["arch"], len(exp["sigmas"]), shape[0], **exp["estimator"].get("options", {}))), shape)

    test_every = int(data.get("test_every", data.get("every", 1))) * int(exp["certify"].get("every", 1))
    train_every = int(data.get("train_every", 1))
    test = SPLIT_SIZES[dataset]["test"] // test_every
    train = SPLIT_SIZES[dataset]["train"] // train_every
    labelled = train // int(exp["label"].get("every", 1))
    draws = int(exp["certify"]["n0"]) + int(exp["certify"]["n"])
    label_draws = int(exp["label"]["n0"]) + int(exp["label"]["n"])
    sigmas = len(exp["sigmas"])
    est_epochs = int(exp["estimator"]["train"]["epochs"])
    copies = int(exp["estimator"].get("copies", 2))
    fine = exp["finetune"]
    return [
        StageCompute("label training set (every sigma)", labelled * sigmas * label_draws, denoise + classify),
        StageCompute("train estimator", est_epochs * labelled * copies, denoise + 3 * estimate),
        StageCompute("route training set", train * int(fine["n_route"]), denoise + estimate),
        StageCompute("finetune classifier", int(fine["epochs"]) * train, denoise + 3 * classify),
        StageCompute("certify global sigma (every sigma)", test * sigmas * draws, denoise + classify),
        StageCompute("certify dual (round 0 and finetuned)", 2 * test * draws, 2 * denoise + estimate + classify),
        StageCompute("certify cascade (2 variants; at most)", 2 * test * sigmas * draws, denoise + classify),
    ]

"""Inference arithmetic of classifiers and estimators: bfloat16 autocast on CUDA, float32 elsewhere (assembly.Denoisers,
models.Autocast); the denoiser's UNet: tests/test_assembly.py."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dualrs.assembly import Denoisers, inference_precision
from dualrs.models import Autocast


def test_precision_applies_on_cuda_only_and_unknown_names_are_refused():
    assert inference_precision("bf16", torch.device("cuda")) == "bf16"
    assert inference_precision("bf16", torch.device("cpu")) == "fp32"
    assert inference_precision("fp32", torch.device("cuda")) == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        inference_precision("fp16", torch.device("cuda"))


def test_a_cpu_job_runs_the_model_itself_and_a_cuda_job_wraps_it_in_autocast():
    model = nn.Linear(4, 3)
    assert Denoisers(None, torch.device("cpu"), "bf16").wrap(model, 0.5) is model
    wrapped = Denoisers(None, torch.device("cuda"), "bf16").wrap(model, 0.5)
    assert isinstance(wrapped, Autocast) and wrapped.dtype == torch.bfloat16
    assert Denoisers(None, torch.device("cuda"), "fp32").wrap(model, 0.5) is model


def test_autocast_returns_float32_logits_within_bfloat16_rounding():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5))
    x = torch.randn(64, 16)
    low = Autocast(model, torch.bfloat16)(x)
    assert low.dtype == torch.float32
    assert not torch.equal(low, model(x))  # the arithmetic did change
    torch.testing.assert_close(low, model(x), rtol=0.05, atol=0.05)

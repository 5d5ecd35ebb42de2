"""Memory of GPU jobs measured on the meta device (dualrs/memory.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from torch import nn

from dualrs.memory import Stage, build_on_meta, configured_jobs, device_gib, parameter_bytes
from dualrs.models import create_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_inference_peak_is_the_input_plus_the_output_of_one_linear_layer(batch):
    layer = build_on_meta(lambda: nn.Linear(300, 500))
    assert Stage("linear", layer, (300,), batch).activation_bytes() == 4 * batch * (300 + 500)
    assert Stage("linear", layer, (300,), batch, precision="bf16").activation_bytes() == 2 * batch * (300 + 500)


def test_training_holds_gradients_and_adamw_moments_besides_the_activations():
    layer = build_on_meta(lambda: nn.Linear(300, 500))
    weights = parameter_bytes(layer)
    small, large = (Stage("linear", layer, (300,), b, train=True).activation_bytes() for b in (8, 16))
    assert small >= 3 * weights  # gradients, exp_avg, exp_avg_sq
    assert large > small
    mixed = Stage("linear", layer, (300,), 8, train=True, precision="bf16").activation_bytes()
    assert mixed >= 3 * weights  # the float32 gradients and moments stay under mixed precision


def test_gradient_checkpointing_cuts_the_training_peak_and_is_refused_where_unsupported():
    vit = build_on_meta(lambda: create_model("timm/test_vit", 10, 3, input_size=160))
    plain = Stage("vit", vit, (3, 160, 160), 16, train=True).activation_bytes()
    checkpointed = Stage("vit", vit, (3, 160, 160), 16, train=True, grad_checkpointing=True).activation_bytes()
    assert checkpointed < 0.8 * plain
    mlp = build_on_meta(lambda: nn.Sequential(nn.Linear(4, 4)))
    with pytest.raises(ValueError, match="offers no gradient checkpointing"):
        Stage("mlp", mlp, (4,), 2, train=True, grad_checkpointing=True).activation_bytes()


def test_memory_grows_linearly_with_the_batch_of_a_real_architecture():
    net = build_on_meta(lambda: create_model("cifar_resnet20", 10, 3))
    one, two, four = (Stage("resnet", net, (3, 32, 32), b).activation_bytes() for b in (16, 32, 64))
    assert two == pytest.approx(2 * one, rel=0.05) and four == pytest.approx(2 * two, rel=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["cifar10", "imagenet"])
def test_every_gpu_job_of_the_paper_settings_fits_a_40_gb_card(experiment):
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    needs = {job.job: device_gib(job.tensor_bytes()) for job in configured_jobs(config, experiment)}
    assert len(needs) == 4
    assert all(need <= 40 for need in needs.values()), needs
    assert device_gib(0) > 0  # the CUDA context is counted

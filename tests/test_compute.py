"""FLOP counts and GPU-hours of the paper's stages (dualrs/compute.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from torch import nn

from dualrs.compute import StageCompute, experiment_compute, forward_flops
from dualrs.memory import build_on_meta
from dualrs.models import create_model

ROOT = Path(__file__).resolve().parents[1]


def test_a_linear_layer_costs_two_flops_per_multiply_add():
    assert forward_flops(build_on_meta(lambda: nn.Linear(300, 500)), (300,)) == 2 * 300 * 500


def test_vit_b16_at_224_costs_its_published_17_6_gmacs():
    vit = build_on_meta(lambda: create_model("timm/vit_base_patch16_224", 10, 3, input_size=224))
    assert forward_flops(vit, (3, 32, 32)) / 2e9 == pytest.approx(17.6, rel=0.03)


def test_hours_are_flops_over_throughput():
    stage = StageCompute("x", evaluations=3600, flops_per_evaluation=10**12)
    assert stage.gpu_hours(tflops=1.0) == pytest.approx(1.0)
    assert stage.gpu_hours(tflops=2.0) == pytest.approx(0.5)


def test_the_cifar10_certification_counts_every_test_image_sigma_and_draw():
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    stages = {s.stage: s for s in experiment_compute(config, "cifar10")}
    certify = config["experiments"]["cifar10"]["certify"]
    assert stages["certify global sigma (every sigma)"].evaluations == 10_000 * 3 * (certify["n0"] + certify["n"])
    assert stages["label training set (every sigma)"].evaluations == 50_000 * 3 * (32 + 100)
    assert all(s.flops > 0 for s in stages.values())


@pytest.mark.slow
def test_the_budget_script_prints_memory_and_hours_for_each_job(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_budget.py"), "--experiments", "cifar10",
                          "--tflops", "50"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("| cifar10 |")]
    assert len(rows) == 4 + 8  # four GPU jobs; seven stages and the total
    assert "GPU-hours at 50 TFLOP/s" in out
    assert all(row.rstrip(" |").split("|")[-1].strip() in {"yes", "no"} for row in rows[:4])

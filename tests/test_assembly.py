"""Smoothed models assembled from checkpoints (dualrs.assembly): each σ's classifier behind the denoiser's
view at that σ, the estimator's class k standing for the k-th smallest σ, checkpoints of the wrong kind refused."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
from torch import nn

from benchmarks.digits import digits_models
from dualrs import assembly
from dualrs.assembly import (DataSpec, ExpertSpec, load_cascade, load_classifiers, load_dual, load_router,
                             load_smooth)
from dualrs.denoise import DiffusionDenoiser, save_denoiser
from dualrs.io import save_checkpoint
from dualrs.models import create_model
from dualrs.seeding import sample_generator
from dualrs.tasks import DataRef

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = torch.device("cpu")
DIGITS = DataSpec("digits", num_classes=10, in_chans=1, input_size=(8, 8))
X = torch.rand(1, 8, 8)


def constant(path: Path, num_classes: int, k: int, **meta) -> Path:
    """A checkpoint of a ``digits_mlp`` whose logits favour class ``k`` on every input."""
    torch.manual_seed(0)
    model = create_model("digits_mlp", num_classes, 1, width=4)
    with torch.no_grad():
        model[-1].weight.zero_()
        model[-1].bias.copy_(10.0 * nn.functional.one_hot(torch.tensor(k), num_classes))
    save_checkpoint(path, model, {"arch": "digits_mlp", "num_classes": num_classes, "in_chans": 1,
                                  "model_kwargs": {"width": 4}, **meta})
    return path


def predicted(model: nn.Module) -> int:
    with torch.no_grad():
        return int(model(X[None]).argmax())


@pytest.fixture
def classifiers(tmp_path: Path) -> dict[float, Path]:
    """σ ↦ a classifier predicting class 4σ (1, 2, 4), given in no sorted order."""
    return {s: constant(tmp_path / f"classifier_sigma{s:g}.safetensors", 10, int(4 * s), role="classifier", sigma=s)
            for s in (1.0, 0.25, 0.5)}


@pytest.fixture(scope="module")
def denoiser(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4, add_attention=False)
    path = tmp_path_factory.mktemp("denoiser") / "denoiser"
    save_denoiser(unet, DDPMScheduler(), path)
    return path


def estimator(path: Path, k: int, sigmas: list[float]) -> Path:
    return constant(path, len(sigmas), k, role="estimator", sigmas=sigmas)


def test_each_sigma_gets_its_classifier_and_the_estimators_class_k_the_kth_smallest_sigma(tmp_path, classifiers):
    dual = load_dual(estimator(tmp_path / "estimator.safetensors", 1, [0.25, 0.5, 1.0]), classifiers, 1.0, None,
                     CPU, DIGITS)
    assert dual.sigmas == [0.25, 0.5, 1.0]
    assert {s: predicted(smooth.base_classifier) for s, smooth in dual.classifiers.items()} == \
           {0.25: 1, 0.5: 2, 1.0: 4}
    cert = dual.certify(X, 10, 100, 0.01, 0.01, 64, sample_generator(0, "certify-dual", 0))
    assert (cert.sigma, cert.prediction) == (0.5, 2)
    assert dual.estimator.sigma == 1.0


def test_a_checkpoint_shared_by_two_sigmas_is_loaded_once(tmp_path):
    path = constant(tmp_path / "shared.safetensors", 10, 3)
    models, num_classes = load_classifiers({0.25: path, 0.5: str(path)}, CPU, DIGITS)
    assert models[0.25] is models[0.5] and num_classes == 10


def test_every_model_sees_the_denoisers_view_at_its_own_sigma(tmp_path, classifiers, denoiser):
    dual = load_dual(estimator(tmp_path / "estimator.safetensors", 0, [0.25, 0.5, 1.0]), classifiers, 0.75, denoiser,
                     CPU, DIGITS)
    views = {s: smooth.base_classifier[0] for s, smooth in dual.classifiers.items()}
    views["e"] = dual.estimator.base_classifier[0]
    assert all(isinstance(view, DiffusionDenoiser) for view in views.values())
    assert {s: view.sigma for s, view in views.items()} == {0.25: 0.25, 0.5: 0.5, 1.0: 1.0, "e": 0.75}
    assert len({id(view.unet) for view in views.values()}) == 1, "the views share one UNet"
    assert predicted(dual.classifiers[1.0].base_classifier) == 4
    smooth = load_smooth(classifiers[0.5], 0.5, denoiser, CPU, DIGITS, "bf16")
    assert smooth.sigma == 0.5 and smooth.num_classes == 10
    assert smooth.base_classifier[0].sigma == 0.5 and predicted(smooth.base_classifier) == 2


def test_cascade_stages_run_from_the_largest_sigma_each_with_its_classifier(classifiers, denoiser):
    cascade = load_cascade(classifiers, denoiser, CPU, DIGITS, 0.5, "published")
    assert [(stage.sigma, stage.base_classifier[0].sigma, predicted(stage.base_classifier))
            for stage in cascade.stages] == [(1.0, 1.0, 4), (0.5, 0.5, 2), (0.25, 0.25, 1)]


def test_router_experts_have_their_own_sigma_and_denoiser(tmp_path, classifiers, denoiser):
    router = constant(tmp_path / "router.safetensors", 2, 1, role="estimator", experts=["plain", "denoised"])
    experts = [ExpertSpec("plain", 0.25, classifiers[0.25]), ExpertSpec("denoised", 1.0, classifiers[1.0], denoiser)]
    routed = load_router(router, experts, 0.5, None, CPU, DIGITS)
    plain, denoised = (smooth.base_classifier for smooth in routed.smoothed)
    assert not isinstance(plain[0], DiffusionDenoiser) and predicted(plain) == 1
    assert denoised[0].sigma == 1.0 and predicted(denoised) == 4
    assert not isinstance(routed.router.base_classifier[0], DiffusionDenoiser) and routed.router.sigma == 0.5
    cert = routed.certify(X, 10, 100, 0.01, 0.01, 64, sample_generator(0, "certify-router", 0))
    assert (cert.expert, cert.sigma, cert.prediction) == ("denoised", 1.0, 4)
    with pytest.raises(ValueError, match=r"trained for experts \['plain', 'denoised'\], but experts "
                                         r"\['denoised', 'plain'\] are given"):
        load_router(router, experts[::-1], 0.5, None, CPU, DIGITS)


def test_checkpoints_of_the_wrong_kind_are_refused(tmp_path, classifiers):
    with pytest.raises(ValueError, match=r"was trained for sigmas None, but classifiers are given for "
                                         r"\[0.25, 0.5, 1.0\]"):
        load_dual(classifiers[0.5], classifiers, 1.0, None, CPU, DIGITS)
    other = estimator(tmp_path / "estimator.safetensors", 0, [0.25, 0.5])
    with pytest.raises(ValueError, match=r"trained for sigmas \[0.25, 0.5\]"):
        load_dual(other, classifiers, 1.0, None, CPU, DIGITS)
    three = DataSpec("three", num_classes=3, in_chans=1)
    with pytest.raises(ValueError, match="is for 10 classes from 1-channel inputs, but a classifier of dataset "
                                         "'three' needs 3 classes from 1-channel inputs"):
        load_smooth(classifiers[0.5], 0.5, None, CPU, three)
    with pytest.raises(ValueError, match="needs 10 classes from 3-channel inputs"):
        load_classifiers(classifiers, CPU, DataSpec("rgb", 10, 3))
    grey = estimator(tmp_path / "grey.safetensors", 0, [0.25, 0.5, 1.0])
    with pytest.raises(ValueError, match="but an estimator over sigmas .* on dataset 'rgb' needs 3 classes from "
                                         "3-channel inputs"):
        load_dual(grey, classifiers, 1.0, None, CPU, DataSpec("rgb", 10, 3))


def test_a_data_ref_states_what_its_checkpoints_must_fit(tmp_path):
    assert DataRef("digits", tmp_path).spec() == DIGITS


def test_the_benchmark_loads_round_0_checkpoints_through_the_assembly(tmp_path, classifiers):
    estimator(tmp_path / "estimator_it0.safetensors", 2, [0.25, 0.5, 1.0])
    models = digits_models(tmp_path, [0.25, 0.5, 1.0], 1.0, (torch.zeros(0), torch.zeros(0)), 1, 1, 0)
    assert models.source == f"checkpoints in {tmp_path}"
    assert {s: predicted(m) for s, m in models.classifiers.items()} == {0.25: 1, 0.5: 2, 1.0: 4}
    assert predicted(models.estimator) == 2
    with pytest.raises(ValueError, match=r"trained for sigmas \[0.25, 0.5, 1.0\], but classifiers are given for "
                                         r"\[0.25, 0.5\]"):
        digits_models(tmp_path, [0.25, 0.5], 1.0, (torch.zeros(0), torch.zeros(0)), 1, 1, 0)


@pytest.mark.parametrize("device,precision,kernels,expected", [
    ("cuda", "bf16", False, "fp16"), ("cuda", "fp32", True, "fp16"),
    ("cpu", "bf16", True, "bf16"), ("cpu", "bf16", False, "fp32"), ("cpu", "fp32", True, "fp32"),
])
def test_the_denoisers_arithmetic_by_device_precision_and_cpu(monkeypatch, device, precision, kernels, expected):
    monkeypatch.setattr(assembly, "cpu_has_bf16_kernels", lambda: kernels)
    assert assembly.denoiser_precision(precision, torch.device(device)) == expected
    with pytest.raises(ValueError, match="precision must be one of"):
        assembly.denoiser_precision("fp16", torch.device(device))


@pytest.mark.parametrize("kernels", [True, False])
def test_denoised_models_run_the_unet_in_bf16_on_a_cpu_with_bf16_kernels(monkeypatch, tmp_path, classifiers, denoiser,
                                                                          kernels):
    """With precision bf16 every view's UNet computes in bfloat16 where the CPU has the kernels (the
    classifiers stay float32 on CPU), else in float32; either way x̂0 comes back in float32, close to it."""
    monkeypatch.setattr(assembly, "cpu_has_bf16_kernels", lambda: kernels)
    dual = load_dual(estimator(tmp_path / "estimator.safetensors", 0, [0.25, 0.5, 1.0]), classifiers, 1.0, denoiser,
                     CPU, DIGITS, "bf16")
    views = [smooth.base_classifier[0] for smooth in dual.classifiers.values()] + [dual.estimator.base_classifier[0]]
    assert {view.cpu_autocast for view in views} == {kernels}
    seen = []
    hook = views[0].unet.conv_in.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    noisy = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        x0 = views[0](noisy)
        reference = DiffusionDenoiser(views[0].unet, views[0].alphas_cumprod, views[0].sigma)(noisy)
    hook.remove()
    assert seen[0] == (torch.bfloat16 if kernels else torch.float32) and seen[1] == torch.float32
    assert x0.dtype == torch.float32
    torch.testing.assert_close(x0, reference, atol=0.05 if kernels else 1e-6, rtol=0)

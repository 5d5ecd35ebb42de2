"""Tests for dualrs.denoise: timestep rule, x̂0 algebra, (de)serialisation and DDPM training."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from sklearn.datasets import load_digits

from dualrs.denoise import (
    DiffusionDenoiser,
    build_digits_unet,
    save_denoiser,
    timestep_for_sigma,
    train_ddpm,
)

ABAR = DDPMScheduler().alphas_cumprod


pytestmark = pytest.mark.usefixtures("single_thread")


def noise_std(t: int) -> float:
    """Diffusion-space noise std sqrt((1 - ᾱ_t) / ᾱ_t) of the default DDPM schedule."""
    abar = ABAR.double()[t]
    return float(torch.sqrt((1.0 - abar) / abar))


def tiny_unet(in_channels: int = 1, out_channels: int = 1, seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=out_channels,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        add_attention=False,
    )


class StubUNet(torch.nn.Module):
    """Returns a fixed prediction and records what it was called with."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = output
        self.calls: list[tuple[torch.Tensor, int]] = []

    def forward(self, sample: torch.Tensor, timestep: int) -> SimpleNamespace:
        self.calls.append((sample.detach().clone(), timestep))
        return SimpleNamespace(sample=self.output)


# ----------------------------------------------------------------------------- timestep rule


def test_timestep_is_minimal_and_meets_bound() -> None:
    sigmas = torch.linspace(0.005, noise_std(len(ABAR) - 1) / 2, 400, dtype=torch.float64).tolist()
    ts = [timestep_for_sigma(ABAR, s) for s in sigmas]
    assert ts == sorted(ts)
    assert len(set(ts)) > 100
    for s, t in zip(sigmas, ts):
        assert noise_std(t) >= 2 * s
        if t > 0:
            assert noise_std(t - 1) < 2 * s


@pytest.mark.parametrize("t", [0, 1, 57, 300, 999])
def test_timestep_exact_grid_point(t: int) -> None:
    assert timestep_for_sigma(ABAR, noise_std(t) / 2) == t
    if t + 1 < len(ABAR):
        assert timestep_for_sigma(ABAR, noise_std(t) / 2 * (1 + 1e-9)) == t + 1


def test_timestep_rejects_too_large_sigma() -> None:
    with pytest.raises(ValueError, match=r"sigma=1000\.0.*largest supported sigma is 78\.70"):
        timestep_for_sigma(ABAR, 1000.0)
    with pytest.raises(ValueError):
        timestep_for_sigma(ABAR, noise_std(999) / 2 * 1.001)


@pytest.mark.parametrize("sigma", [0.0, -0.25])
def test_timestep_rejects_nonpositive_sigma(sigma: float) -> None:
    with pytest.raises(ValueError, match="sigma must be > 0"):
        timestep_for_sigma(ABAR, sigma)


# ----------------------------------------------------------------------------- x̂0 algebra


def closed_form_case(t: int, channels: int = 1, dtype: torch.dtype = torch.float32):
    """x0, δ and σ such that x_t = sqrt(ᾱ_t)(2x0 - 1) + sqrt(1 - ᾱ_t) δ holds exactly at t."""
    g = torch.Generator().manual_seed(t)
    x0 = (0.05 + 0.9 * torch.rand(4, channels, 8, 8, generator=g)).to(dtype)
    delta = torch.randn(4, channels, 8, 8, generator=g).to(dtype)
    sigma = noise_std(t) / 2
    return x0, delta, sigma


def exact_prediction(kind: str, x0: torch.Tensor, delta: torch.Tensor, t: int) -> torch.Tensor:
    a = ABAR.double()[t]
    clean = 2 * x0.double() - 1
    if kind == "epsilon":
        out = delta.double()
    elif kind == "sample":
        out = clean
    else:
        out = a.sqrt() * delta.double() - (1 - a).sqrt() * clean
    return out.float()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("t", [20, 150, 400])
def test_recovers_x0_for_each_prediction_type(kind: str, t: int, dtype: torch.dtype) -> None:
    x0, delta, sigma = closed_form_case(t, dtype=dtype)
    stub = StubUNet(exact_prediction(kind, x0, delta, t))
    den = DiffusionDenoiser(stub, ABAR, sigma, prediction_type=kind)
    assert den.timestep == t and den.sigma == sigma
    out = den(x0 + sigma * delta)
    assert out.dtype == dtype and out.shape == x0.shape
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)
    (x_t, timestep), = stub.calls
    assert timestep == t
    expected_xt = ABAR.double()[t].sqrt() * (2 * (x0.double() + sigma * delta.double()) - 1)
    torch.testing.assert_close(x_t.double(), expected_xt, atol=1e-5, rtol=0)


def test_learned_variance_output_uses_first_channels() -> None:
    t = 150
    x0, delta, sigma = closed_form_case(t, channels=3)
    eps = exact_prediction("epsilon", x0, delta, t)
    stub = StubUNet(torch.cat([eps, torch.full_like(eps, 1e3)], dim=1))
    out = DiffusionDenoiser(stub, ABAR, sigma)(x0 + sigma * delta)
    assert out.shape == x0.shape
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["epsilon", "sample", "v_prediction"])
def test_output_is_clipped(kind: str) -> None:
    x = torch.full((2, 1, 8, 8), 0.5)
    big = torch.full_like(x, 50.0)
    big[0] = -50.0
    den = DiffusionDenoiser(StubUNet(big), ABAR, 0.5, prediction_type=kind)
    out = den(x)
    # "sample" takes the prediction as x̂0; the other two subtract it.
    high, low = (1, 0) if kind == "sample" else (0, 1)
    assert torch.all(out[0] == low) and torch.all(out[1] == high)


def test_unknown_prediction_type() -> None:
    with pytest.raises(ValueError, match="'flow'"):
        DiffusionDenoiser(StubUNet(torch.zeros(1)), ABAR, 0.25, prediction_type="flow")


def test_sigma_too_large_for_schedule() -> None:
    with pytest.raises(ValueError, match="largest supported sigma"):
        DiffusionDenoiser(StubUNet(torch.zeros(1)), ABAR, 500.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("out_factor", [1, 2])
def test_real_unet_shapes_and_dtypes(out_factor: int, dtype: torch.dtype) -> None:
    den = DiffusionDenoiser(tiny_unet(3, 3 * out_factor), ABAR, 0.25)
    x = torch.rand(5, 3, 8, 8, dtype=dtype) + 0.25 * torch.randn(5, 3, 8, 8, dtype=dtype)
    with torch.no_grad():
        out = den(x)
    assert out.shape == x.shape and out.dtype == dtype
    assert out.min() >= 0 and out.max() <= 1
    with torch.no_grad():
        single = torch.cat([den(x[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(out, single, atol=1e-5, rtol=0)


def test_alphas_cumprod_is_a_buffer() -> None:
    den = DiffusionDenoiser(tiny_unet(), ABAR, 0.25)
    assert "alphas_cumprod" in dict(den.named_buffers())
    torch.testing.assert_close(den.alphas_cumprod, ABAR)


# ----------------------------------------------------------------------------- save / load


def denoise_batch() -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.rand(3, 1, 8, 8, generator=g) + 0.5 * torch.randn(3, 1, 8, 8, generator=g)


def assert_same_output(path: Path, unet: UNet2DModel, scheduler: DDPMScheduler) -> None:
    expected = DiffusionDenoiser(unet, scheduler.alphas_cumprod, 0.5, prediction_type=scheduler.config.prediction_type)
    loaded = DiffusionDenoiser.from_pretrained(path, sigma=0.5)
    assert loaded.prediction_type == scheduler.config.prediction_type
    assert loaded.timestep == expected.timestep
    x = denoise_batch()
    with torch.no_grad():
        assert torch.equal(loaded(x), expected(x))


def test_save_denoiser_roundtrip(tmp_path: Path) -> None:
    unet, scheduler = tiny_unet(), DDPMScheduler(prediction_type="v_prediction")
    target = tmp_path / "models" / "denoiser"
    save_denoiser(unet, scheduler, target)
    assert_same_output(target, unet, scheduler)
    other = tiny_unet(seed=1)
    save_denoiser(other, scheduler, target)  # overwriting replaces the directory
    assert_same_output(target, other, scheduler)
    assert [p.name for p in target.parent.iterdir()] == ["denoiser"]


def test_save_denoiser_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unet, scheduler = tiny_unet(), DDPMScheduler()
    target = tmp_path / "denoiser"
    save_denoiser(unet, scheduler, target)

    def broken_save(self: DDPMPipeline, path: str) -> None:
        (Path(path) / "model_index.json").write_text("{")
        raise OSError("disk full")

    monkeypatch.setattr(DDPMPipeline, "save_pretrained", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_denoiser(tiny_unet(seed=1), scheduler, target)
    with pytest.raises(OSError, match="disk full"):
        save_denoiser(unet, scheduler, tmp_path / "fresh")
    assert [p.name for p in tmp_path.iterdir()] == ["denoiser"]
    monkeypatch.undo()
    assert_same_output(target, unet, scheduler)


def test_load_pipeline_layout(tmp_path: Path) -> None:
    unet, scheduler = tiny_unet(), DDPMScheduler(prediction_type="sample")
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    assert_same_output(tmp_path / "pipe", unet, scheduler)


@pytest.mark.parametrize("scheduler_subfolder", ["scheduler", ""])
def test_load_unet_directory_layout(tmp_path: Path, scheduler_subfolder: str) -> None:
    unet, scheduler = tiny_unet(1, 2), DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    unet.save_pretrained(tmp_path / "unet_only")
    scheduler.save_pretrained(tmp_path / "unet_only" / scheduler_subfolder)
    assert_same_output(tmp_path / "unet_only", unet, scheduler)


def test_missing_path_raises(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "denoiser"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        DiffusionDenoiser.from_pretrained(missing, sigma=0.25)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=str(empty / "unet" / "config.json")):
        DiffusionDenoiser.from_pretrained(empty, sigma=0.25)
    tiny_unet().save_pretrained(empty)
    with pytest.raises(FileNotFoundError, match="scheduler_config.json"):
        DiffusionDenoiser.from_pretrained(empty, sigma=0.25)


# ----------------------------------------------------------------------------- training


def digits() -> torch.Tensor:
    return torch.tensor(load_digits().images / 16.0, dtype=torch.float32)[:, None]


def denoising_mse(unet: UNet2DModel, scheduler: DDPMScheduler, clean: torch.Tensor, sigma: float) -> float:
    g = torch.Generator().manual_seed(123)
    noisy = clean + sigma * torch.randn(clean.shape, generator=g)
    with torch.no_grad():
        out = DiffusionDenoiser(unet, scheduler.alphas_cumprod, sigma)(noisy)
    return float(((out - clean) ** 2).mean())


def test_build_digits_unet_shapes() -> None:
    unet = build_digits_unet()
    assert unet.config.sample_size == 8 and unet.config.in_channels == unet.config.out_channels == 1
    with torch.no_grad():
        out = unet(torch.randn(2, 1, 8, 8), 10).sample
    assert out.shape == (2, 1, 8, 8)


def test_train_ddpm_improves_denoising() -> None:
    images = digits()
    train, held_out = images[:1400], images[1400:1600]
    untrained = tiny_unet()
    trained, scheduler = train_ddpm(
        train, steps=60, batch_size=32, lr=3e-3, seed=0, progress=False, unet=copy.deepcopy(untrained)
    )
    assert not trained.training
    before = denoising_mse(untrained, scheduler, held_out, 0.5)
    after = denoising_mse(trained, scheduler, held_out, 0.5)
    g = torch.Generator().manual_seed(123)
    noisy = (held_out + 0.5 * torch.randn(held_out.shape, generator=g)).clamp(0, 1)
    noisy_mse = float(((noisy - held_out) ** 2).mean())
    assert after < 0.7 * before
    assert after < 0.7 * noisy_mse


def test_train_ddpm_is_seeded() -> None:
    images = torch.rand(64, 1, 8, 8)
    runs = [train_ddpm(images, steps=3, batch_size=16, lr=1e-3, seed=s, progress=False)[0] for s in (5, 5, 6)]
    a, b, c = (r.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_train_ddpm_rejects_mismatched_unet() -> None:
    with pytest.raises(ValueError, match="1 input and output channels"):
        train_ddpm(torch.rand(8, 1, 8, 8), steps=1, batch_size=4, lr=1e-3, seed=0, progress=False, unet=tiny_unet(1, 2))


# ----------------------------------------------------------------------------- conditioning.json


def test_conditioning_scales_timestep_for_every_view(tmp_path: Path) -> None:
    """A ``timestep_scale`` travels with the UNet, also to views built from it (as dualrs.assembly does)."""
    unet, scheduler = tiny_unet(), DDPMScheduler(num_train_timesteps=4000, beta_schedule="squaredcos_cap_v2")
    save_denoiser(unet, scheduler, tmp_path / "d", {"timestep_scale": 0.25})
    loaded = DiffusionDenoiser.from_pretrained(tmp_path / "d", sigma=0.5)
    other = DiffusionDenoiser(loaded.unet, loaded.alphas_cumprod, 0.25)
    seen: list[float] = []
    loaded.unet.unet.register_forward_pre_hook(lambda module, args: seen.append(float(args[1])))
    x = denoise_batch()
    with torch.no_grad():
        out = loaded(x)
        other(x)
        direct = unet(loaded.alphas_cumprod[loaded.timestep].sqrt() * (2 * x - 1), loaded.timestep / 4).sample
    assert seen == [loaded.timestep / 4, other.timestep / 4]
    a = loaded.alphas_cumprod[loaded.timestep]
    x0 = (a.sqrt() * (2 * x - 1) - (1 - a).sqrt() * direct) / a.sqrt()
    torch.testing.assert_close(out, (x0.clamp(-1, 1) + 1) / 2)


def test_conditioning_sets_attention_heads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       norm_num_groups=4, attention_head_dim=4)
    save_denoiser(unet, DDPMScheduler(), tmp_path / "d", {"attention_heads": {"mid_block.attentions.0": 2}})
    loaded = DiffusionDenoiser.from_pretrained(tmp_path / "d", sigma=0.5).unet
    attn = loaded.get_submodule("mid_block.attentions.0")
    assert (attn.heads, attn.scale) == (2, 8**-0.5)
    assert loaded.get_submodule("down_blocks.1.attentions.0").heads == 4
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(loaded(x, 10).sample, unet(x, 10).sample, atol=1e-4)

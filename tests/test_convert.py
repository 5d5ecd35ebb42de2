"""Tests for dualrs.convert against what the original openai code computed on tiny models.

``tests/fixtures/diffusion`` holds, for an improved-diffusion (CIFAR-10 flags) and a guided-diffusion
(256x256 uncond flags) model of reduced width, depth and image size: the original flags, the state
dict's keys and shapes (weights rebuilt deterministically, see ``state_dict``), and the original
``model_output`` at ``t_net``, ``pred_xstart`` (with and without clipping) and ``alphas_cumprod``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from safetensors.torch import load_file

from dualrs import cli
from dualrs.convert import PRESETS, OpenAIFlags, convert_openai_checkpoint, unet_config
from dualrs.denoise import DiffusionDenoiser

FIXTURES = Path(__file__).parent / "fixtures" / "diffusion"
CIFAR10, IMAGENET = "improved_diffusion_cifar10_tiny", "guided_diffusion_uncond_tiny"
PRESET_OF = {CIFAR10: "cifar10_uncond_50M_500K", IMAGENET: "256x256_diffusion_uncond"}
# The original outputs are of order 1-10; a faithful conversion matches to float32 round-off, which
# depends on the CPU's kernels: up to 1e-3 with AVX2, 2.1e-3 with AVX-512 (|output| up to 8.7).
OUTPUT_ATOL = 4e-3
# x̂0 = (x_t - sqrt(1 - ᾱ) ε̂) / sqrt(ᾱ) scales the network's error by sqrt((1 - ᾱ) / ᾱ),
# 0.5 to 6.2 at the fixtures' t.
X0_ATOL = 2e-3


pytestmark = pytest.mark.usefixtures("single_thread")


def flags(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.flags.json").read_text())


def expected(name: str) -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / f"{name}.expected.safetensors")


def state_dict(name: str) -> dict[str, torch.Tensor]:
    """The original state dict: key i (sorted) with n elements is ``sin(0.7·arange(n) + i)``, fan-in scaled."""
    out = {}
    for i, (key, shape) in enumerate(json.loads((FIXTURES / f"{name}.keys.json").read_text())):
        n = math.prod(shape)
        w = torch.sin(0.7 * torch.arange(n, dtype=torch.float64) + i).reshape(shape)
        if len(shape) >= 2:
            w = w / math.sqrt(n / shape[0])
        elif key.endswith("weight"):
            w = 1 + 0.1 * w
        else:
            w = 0.1 * w
        out[key] = w.float()
    return out


@pytest.fixture(scope="module", params=[CIFAR10, IMAGENET])
def converted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp(request.param) / "denoiser"
    convert_openai_checkpoint(state_dict(request.param), flags(request.param), out)
    return request.param, out


def network_output(path: Path, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    unet = UNet2DModel.from_pretrained(path / "unet", local_files_only=True)
    with torch.no_grad():
        return unet(x_t, t).sample


def denoiser_at(path: Path, t: int) -> DiffusionDenoiser:
    """The converted directory's denoiser for the σ whose timestep is exactly ``t``."""
    abar = DDPMScheduler.from_pretrained(path / "scheduler", local_files_only=True).alphas_cumprod.double()[t]
    den = DiffusionDenoiser.from_pretrained(path, sigma=float(((1 - abar) / abar).sqrt() / 2))
    assert den.timestep == t
    return den


def denoiser_x0(path: Path, exp: dict[str, torch.Tensor]) -> torch.Tensor:
    """``x̂0`` (unclipped) of the converted denoiser on the fixture's ``x_t``, one sample per timestep."""
    with torch.no_grad():
        return torch.cat([denoiser_at(path, int(t)).predict_x0(exp["x_t"][i : i + 1]) for i, t in enumerate(exp["t"])])


# ----------------------------------------------------------------------------- against the original code


def test_model_output_matches_original(converted: tuple[str, Path]) -> None:
    name, path = converted
    exp = expected(name)
    out = network_output(path, exp["x_t"], exp["t_net"])
    assert out.shape == exp["model_output"].shape
    err = (out - exp["model_output"]).abs().max().item()
    print(f"{name}: max |model_output - original| = {err:.2e}")
    assert err < OUTPUT_ATOL


def test_schedule_matches_original(converted: tuple[str, Path]) -> None:
    name, path = converted
    abar = DDPMScheduler.from_pretrained(path / "scheduler", local_files_only=True).alphas_cumprod
    torch.testing.assert_close(abar.double(), expected(name)["alphas_cumprod"], atol=1e-6, rtol=0)


def test_denoiser_x0_matches_original(converted: tuple[str, Path]) -> None:
    name, path = converted
    exp = expected(name)
    x0 = denoiser_x0(path, exp)
    err = (x0 - exp["pred_xstart"]).abs().max().item()
    print(f"{name}: max |pred_xstart - original| = {err:.2e}")
    assert err < X0_ATOL
    torch.testing.assert_close(x0.clamp(-1, 1), exp["pred_xstart_clipped"], atol=X0_ATOL, rtol=0)
    for i, t in enumerate(exp["t"]):
        den = denoiser_at(path, int(t))
        x_noisy = (exp["x_t"][i : i + 1] / den.alphas_cumprod[den.timestep].sqrt() + 1) / 2
        with torch.no_grad():
            image = den(x_noisy)
        torch.testing.assert_close(image, (exp["pred_xstart_clipped"][i : i + 1] + 1) / 2,
                                   atol=X0_ATOL, rtol=0)


def test_cifar10_network_is_handed_rescaled_timesteps(tmp_path: Path) -> None:
    """improved-diffusion hands the network t·1000/4000; handing it the raw t is a visible error."""
    exp = expected(CIFAR10)
    path = tmp_path / "denoiser"
    convert_openai_checkpoint(state_dict(CIFAR10), flags(CIFAR10), path)
    assert json.loads((path / "conditioning.json").read_text())["timestep_scale"] == 0.25
    raw_err = (network_output(path, exp["x_t"], exp["t"].float()) - exp["model_output"]).abs().max().item()
    err = (network_output(path, exp["x_t"], exp["t_net"]) - exp["model_output"]).abs().max().item()
    print(f"{CIFAR10}: max |model_output(raw t) - original| = {raw_err:.2e}, with t·1000/4000 {err:.2e}")
    assert raw_err > 10 * err
    den = denoiser_at(path, int(exp["t"][1]))
    seen: list[torch.Tensor] = []
    den.unet.unet.register_forward_pre_hook(lambda module, args: seen.append(args[1]))
    with torch.no_grad():
        den.predict_x0(exp["x_t"][1:])
    assert [float(t) for t in seen] == [float(exp["t_net"][1])] == [702.25]
    (path / "conditioning.json").unlink()  # what loading the raw diffusers directory would do
    raw_x0_err = (denoiser_x0(path, exp) - exp["pred_xstart"]).abs().max().item()
    print(f"{CIFAR10}: max |pred_xstart(raw t) - original| = {raw_x0_err:.2e}")
    assert raw_x0_err > 10 * X0_ATOL


def test_conditioning_file(converted: tuple[str, Path]) -> None:
    name, path = converted
    conditioning = json.loads((path / "conditioning.json").read_text())
    assert conditioning["timestep_scale"] == (0.25 if name == CIFAR10 else 1.0)
    assert conditioning["attention_heads"] == {}
    assert conditioning["flags"] == dataclasses.asdict(OpenAIFlags.from_dict(flags(name)))
    if name == IMAGENET:
        assert isinstance(denoiser_at(path, 150).unet, UNet2DModel)


# ----------------------------------------------------------------------------- flags and presets


@pytest.mark.parametrize("name", [CIFAR10, IMAGENET])
def test_presets_are_the_fixture_flags_at_full_size(name: str) -> None:
    """The tiny models differ from the published ones only in width, depth and image size."""
    tiny, preset = OpenAIFlags.from_dict(flags(name)), PRESETS[PRESET_OF[name]]
    assert tiny.attention_rates == preset.attention_rates
    sizes = ("image_size", "num_channels", "num_res_blocks", "num_head_channels", "attention_resolutions",
             "channel_mult", "dropout")
    assert dataclasses.replace(tiny, **{k: getattr(preset, k) for k in sizes}) == preset
    assert tiny.mults == preset.mults or name == CIFAR10


@pytest.mark.parametrize("preset,millions", [("cifar10_uncond_50M_500K", 52.5), ("256x256_diffusion_uncond", 552.8)])
def test_preset_parameter_counts(preset: str, millions: float) -> None:
    with torch.device("meta"):
        unet = UNet2DModel(**unet_config(PRESETS[preset]))
    assert sum(p.numel() for p in unet.parameters()) / 1e6 == pytest.approx(millions, abs=0.1)


def test_cli_presets_are_the_presets() -> None:
    assert sorted(cli.DENOISER_PRESETS) == sorted(PRESETS)


@pytest.mark.parametrize("change,message", [
    ({"use_gpu": True}, r"unknown flag\(s\) \['use_gpu'\]"),
    ({"rescale_timesteps": None}, r"missing flag\(s\) \['rescale_timesteps'\]"),
    ({"class_cond": True}, "class-conditional"),
    ({"noise_schedule": "sqrt"}, "noise_schedule"),
    ({"image_size": 48}, "no default channel_mult for image_size 48"),
])
def test_bad_flags(change: dict, message: str) -> None:
    bad = {**flags(CIFAR10), **change}
    bad = {k: v for k, v in bad.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        OpenAIFlags.from_dict(bad)


# ----------------------------------------------------------------------------- bad checkpoints


def mutate(sd: dict[str, torch.Tensor], how: str) -> dict[str, torch.Tensor]:
    sd = dict(sd)
    if how == "missing":
        del sd["middle_block.1.qkv.weight"]
    elif how == "unexpected":
        sd["label_emb.weight"] = torch.zeros(1000, 128)
    else:
        sd["out.2.weight"] = sd["out.2.weight"][:3]
    return sd


@pytest.mark.parametrize("how,message", [
    ("missing", r"missing key 'middle_block\.1\.qkv\.weight'"),
    ("unexpected", r"unexpected key 'label_emb\.weight'"),
    ("shape", r"key 'out\.2\.weight' has shape \(3, 32, 3, 3\), expected \(6, 32, 3, 3\)"),
])
def test_mismatching_checkpoint_is_one_error_and_writes_nothing(tmp_path: Path, how: str, message: str) -> None:
    with pytest.raises(ValueError, match=rf"^checkpoint does not fit the flags: {message}"):
        convert_openai_checkpoint(mutate(state_dict(CIFAR10), how), flags(CIFAR10), tmp_path / "denoiser")
    assert list(tmp_path.iterdir()) == []


def test_other_code_base_checkpoint_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="^checkpoint does not fit the flags: key 'input_blocks.10.0.emb_layers"):
        convert_openai_checkpoint(state_dict(CIFAR10), flags(IMAGENET), tmp_path / "denoiser")
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_file_that_does_not_parse_is_one_error_and_writes_nothing(tmp_path: Path) -> None:
    checkpoint = tmp_path / "tiny.pt"
    torch.save(state_dict(CIFAR10), checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(ValueError, match=f"^diffusion checkpoint {re.escape(str(checkpoint))} is not a safetensors "
                                         "or PyTorch checkpoint, or is truncated: RuntimeError: PytorchStreamReader"):
        convert_openai_checkpoint(checkpoint, PRESETS["cifar10_uncond_50M_500K"], tmp_path / "denoiser")
    assert list(tmp_path.iterdir()) == [checkpoint]


def test_failed_write_leaves_previous_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "denoiser"
    target.mkdir()
    (target / "old").write_text("kept")

    def broken_save(self: DDPMPipeline, path: str) -> None:
        (Path(path) / "model_index.json").write_text("{")
        raise OSError("disk full")

    monkeypatch.setattr(DDPMPipeline, "save_pretrained", broken_save)
    with pytest.raises(OSError, match="disk full"):
        convert_openai_checkpoint(state_dict(CIFAR10), flags(CIFAR10), target)
    assert [p.name for p in tmp_path.iterdir()] == ["denoiser"]
    assert [p.name for p in target.iterdir()] == ["old"]


# ----------------------------------------------------------------------------- command line


def test_cli_converts_a_checkpoint_file(tmp_path: Path) -> None:
    checkpoint = tmp_path / "tiny.pt"
    torch.save(state_dict(CIFAR10), checkpoint)
    out = tmp_path / "denoiser"
    cli.main(["convert-denoiser", "--checkpoint", str(checkpoint), "--flags",
              str(FIXTURES / f"{CIFAR10}.flags.json"), "--out", str(out)])
    exp = expected(CIFAR10)
    assert (network_output(out, exp["x_t"], exp["t_net"]) - exp["model_output"]).abs().max() < OUTPUT_ATOL
    assert (denoiser_x0(out, exp) - exp["pred_xstart"]).abs().max() < X0_ATOL


def test_cli_preset_of_another_size_is_a_clear_error(tmp_path: Path) -> None:
    checkpoint = tmp_path / "tiny.pt"
    torch.save(state_dict(CIFAR10), checkpoint)
    with pytest.raises(SystemExit, match="convert-denoiser: error: checkpoint does not fit the flags: key "
                                         r"'input_blocks\.0\.0\.bias' has shape \(32,\), expected \(128,\)"):
        cli.main(["convert-denoiser", "--checkpoint", str(checkpoint), "--preset", "cifar10_uncond_50M_500K",
                  "--out", str(tmp_path / "denoiser")])
    assert not (tmp_path / "denoiser").exists()

"""Diffusion denoised smoothing (Carlini et al. 2023, "(Certified!!) Adversarial Robustness for Free!").

Randomized smoothing certifies a classifier ``f`` evaluated on Gaussian-noised inputs
``x + δ``, ``δ ~ N(0, σ² I)``. Denoised smoothing prepends a one-shot denoiser so that an
off-the-shelf classifier sees a clean-looking image. Carlini et al. (Sec. 3) use a DDPM
(Ho et al. 2020) trained on ``x ∈ [-1, 1]`` with forward process

    x_t = sqrt(ᾱ_t) · x + sqrt(1 - ᾱ_t) · ε,   ε ~ N(0, I).

Scaling a smoothing sample gives ``sqrt(ᾱ_t) · (x + δ) = sqrt(ᾱ_t) · x + sqrt(ᾱ_t) · σ_d · ε``,
which is a valid ``x_t`` exactly when ``σ_d² = (1 - ᾱ_t) / ᾱ_t``. Here inputs live in
``[0, 1]`` and are mapped by ``u ↦ 2u - 1``, so the diffusion-space noise std is
``σ_d = 2σ``. A single UNet call at that ``t`` then yields the estimate ``x̂0``.

The denoiser only chooses ``t``; the certified radius is computed from the σ actually
added by the smoothing procedure.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from dualrs.denoiser_layout import denoiser_folders
from dualrs.progress import progress as progress_bar
from dualrs.tables import give_default_modes, read_json_object
from dualrs.training_state import TrainingState, state_file_for
from dualrs.validation import NonFiniteError

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
CONDITIONING_FILE = "conditioning.json"
# timestep_scale: the network is handed t * timestep_scale; attention_heads: head counts per module;
# flags: the original checkpoint's model flags, as a record (dualrs.convert).
CONDITIONING_KEYS = ("timestep_scale", "attention_heads", "flags")


def timestep_for_sigma(alphas_cumprod: torch.Tensor, sigma: float) -> int:
    """Smallest ``t`` with ``sqrt((1 - ᾱ_t) / ᾱ_t) >= 2σ`` (Carlini et al. 2023, Sec. 3).

    The factor 2 accounts for mapping ``[0, 1]`` inputs to the diffusion range ``[-1, 1]``.
    Raises ``ValueError`` if ``σ <= 0`` or if no timestep of the schedule is noisy enough.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    abar = alphas_cumprod.detach().to(device="cpu", dtype=torch.float64)
    noise_std = torch.sqrt((1.0 - abar) / abar)
    hits = torch.nonzero(noise_std >= 2.0 * sigma)
    if hits.numel() == 0:
        raise ValueError(
            f"sigma={sigma} is too large for this noise schedule: "
            f"the largest supported sigma is {noise_std.max().item() / 2.0:.6g}"
        )
    return int(hits[0, 0])


class TimestepScaledUNet(torch.nn.Module):
    """A UNet handed ``t · scale`` instead of the timestep index ``t``.

    improved-diffusion trains with ``rescale_timesteps=True``: ``GaussianDiffusion._scale_timesteps``
    (``gaussian_diffusion.py``) hands the network ``t · 1000 / T`` as float32, so the 4000-step
    CIFAR-10 model of Nichol & Dhariwal (2021) sees ``t / 4`` (Carlini et al. 2023 use it as is).
    """

    def __init__(self, unet: torch.nn.Module, scale: float) -> None:
        super().__init__()
        self.unet = unet
        self.scale = float(scale)

    def forward(self, sample: torch.Tensor, timestep: int) -> Any:
        t = torch.tensor(float(timestep), dtype=torch.float32, device=sample.device) * self.scale
        return self.unet(sample, t)


def set_attention_heads(unet: torch.nn.Module, heads: Mapping[str, int]) -> None:
    """Give the named attention modules their number of heads (the head dim becomes ``C / heads``).

    ``UNet2DModel`` has one ``attention_head_dim``; an original model with a fixed head count
    (``num_heads`` in improved-/guided-diffusion ``unet.py``) has a different head dim per width.
    """
    for name, count in heads.items():
        attn = unet.get_submodule(name)
        attn.heads = attn.sliceable_head_dim = int(count)
        attn.scale = (attn.inner_dim // attn.heads) ** -0.5


class DiffusionDenoiser(torch.nn.Module):
    """One-shot DDPM denoiser for inputs ``x + δ`` in ``[0, 1]`` image space.

    ``forward`` computes ``x_t = sqrt(ᾱ_t) · (2(x + δ) - 1)`` with ``t = timestep_for_sigma(ᾱ, σ)``,
    calls the UNet once and converts its output to ``x̂0`` according to ``prediction_type``:

    * ``"epsilon"``:      ``x̂0 = (x_t - sqrt(1 - ᾱ_t) · ε̂) / sqrt(ᾱ_t)``
    * ``"sample"``:       ``x̂0 = output``
    * ``"v_prediction"``: ``x̂0 = sqrt(ᾱ_t) · x_t - sqrt(1 - ᾱ_t) · v̂``

    ``x̂0`` is clipped to ``[-1, 1]`` and returned as ``(x̂0 + 1) / 2``. For learned-variance
    UNets (``2C`` output channels for ``C`` input channels) the first ``C`` channels are used.
    The UNet is handed the timestep index ``t``; wrap it in :class:`TimestepScaledUNet` when it
    was trained on rescaled timesteps. On CUDA the UNet runs under float16 autocast unless
    ``autocast=False``; on CPU under bfloat16 autocast with ``cpu_autocast=True`` (about 1.7× faster
    on CPUs with native bf16 arithmetic), else in float32.
    """

    alphas_cumprod: torch.Tensor

    def __init__(
        self,
        unet: UNet2DModel,
        alphas_cumprod: torch.Tensor,
        sigma: float,
        prediction_type: str = "epsilon",
        autocast: bool = True,
        cpu_autocast: bool = False,
    ) -> None:
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}"
            )
        self.unet = unet
        self.register_buffer("alphas_cumprod", alphas_cumprod.detach().to(torch.float32).clone())
        self.sigma = float(sigma)
        self.timestep = timestep_for_sigma(self.alphas_cumprod, self.sigma)
        self.prediction_type = prediction_type
        self.autocast, self.cpu_autocast = autocast, cpu_autocast
        self.eval()

    def forward(self, x_noisy: torch.Tensor) -> torch.Tensor:
        """Map ``x + δ`` (shape ``(N, C, H, W)``, ``[0, 1]`` scale) to ``x̂0`` in ``[0, 1]``."""
        x_t = self.alphas_cumprod[self.timestep].sqrt() * (2.0 * x_noisy.float() - 1.0)
        x0 = self.predict_x0(x_t)
        if not bool(torch.isfinite(x0).all()):
            raise NonFiniteError(f"the diffusion denoiser (sigma={self.sigma:g}, timestep {self.timestep}) returned "
                                 "non-finite values (NaN or inf)")
        return ((x0.clamp(-1.0, 1.0) + 1.0) / 2.0).to(x_noisy.dtype)

    def predict_x0(self, x_t: torch.Tensor) -> torch.Tensor:
        """Unclipped ``x̂0`` in ``[-1, 1]`` scale from ``x_t`` at ``self.timestep`` (one UNet call)."""
        abar = self.alphas_cumprod[self.timestep]
        sqrt_abar, sqrt_one_minus_abar = abar.sqrt(), (1.0 - abar).sqrt()
        device = x_t.device.type
        use_amp = self.autocast and (device == "cuda" or (device == "cpu" and self.cpu_autocast))
        with torch.autocast(device, dtype=torch.float16 if device == "cuda" else torch.bfloat16, enabled=use_amp):
            out = self.unet(x_t, self.timestep).sample
        out = out[:, : x_t.shape[1]].float()
        if self.prediction_type == "epsilon":
            x0 = (x_t - sqrt_one_minus_abar * out) / sqrt_abar
        elif self.prediction_type == "sample":
            x0 = out
        else:
            x0 = sqrt_abar * x_t - sqrt_one_minus_abar * out
        return x0

    def train(self, mode: bool = True) -> DiffusionDenoiser:
        """The denoiser is frozen: it stays in eval mode when a model around it is trained."""
        return super().train(False)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], sigma: float, **kw: Any) -> DiffusionDenoiser:
        """Load a local diffusers UNet + DDPM scheduler and build a denoiser for ``sigma``.

        The directory's layouts are those of :func:`dualrs.denoiser_layout.denoiser_folders`. ``ᾱ`` and the
        default ``prediction_type`` come from the scheduler; ``kw`` is passed to the constructor. An optional
        ``conditioning.json`` (written by :func:`dualrs.convert.convert_openai_checkpoint`) holds
        ``timestep_scale`` (absent: 1) and per-module ``attention_heads``.
        """
        root = Path(path)
        unet_dir, sched_dir = denoiser_folders(root)
        unet = UNet2DModel.from_pretrained(str(unet_dir), local_files_only=True)
        scheduler = DDPMScheduler.from_pretrained(str(sched_dir), local_files_only=True)
        conditioning = read_conditioning(root)
        try:
            set_attention_heads(unet, conditioning.get("attention_heads", {}))
        except AttributeError as error:
            raise ValueError(f"{root / CONDITIONING_FILE}: attention_heads names a module the UNet lacks: "
                             f"{error}") from None
        scale = float(conditioning.get("timestep_scale", 1.0))
        network = unet if scale == 1.0 else TimestepScaledUNet(unet, scale)
        kw.setdefault("prediction_type", scheduler.config.prediction_type)
        return cls(network, scheduler.alphas_cumprod, sigma, **kw)


def read_conditioning(root: Path) -> dict[str, Any]:
    """The ``conditioning.json`` of a denoiser directory, or ``{}`` when there is none, checked: a JSON
    object of :data:`CONDITIONING_KEYS` only (a misspelt ``timestep_scale`` would silently hand the
    network unscaled timesteps), ``timestep_scale`` a positive number, ``attention_heads`` a mapping of
    module names to positive head counts."""
    path = root / CONDITIONING_FILE
    if not path.is_file():
        return {}
    conditioning = read_json_object(path, str(path))
    if unknown := sorted(set(conditioning) - set(CONDITIONING_KEYS)):
        raise ValueError(f"{path}: unknown key(s) {unknown}; a denoiser's conditioning has only "
                         f"{', '.join(CONDITIONING_KEYS)}")
    scale = conditioning.get("timestep_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"{path}: timestep_scale must be a positive number (the network is handed t times it), "
                         f"got {scale!r}")
    heads = conditioning.get("attention_heads", {})
    if not isinstance(heads, dict) or not all(
            isinstance(count, int) and not isinstance(count, bool) and count > 0 for count in heads.values()):
        raise ValueError(f"{path}: attention_heads must map module names to positive head counts, got {heads!r}")
    return conditioning


def build_digits_unet(sample_size: int = 8, channels: int = 1) -> UNet2DModel:
    """Small convolutional UNet for ``8×8`` images: widths (16, 32) at 8×8 and 4×4, no attention.

    About 0.16M parameters; attention at 4×4 did not improve denoising on the digits and
    cost ~25% more per step on CPU.
    """
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=channels,
        out_channels=channels,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        add_attention=False,
    )


def train_ddpm(
    images: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    num_train_timesteps: int = 1000,
    progress: bool = True,
    unet: UNet2DModel | None = None,
    state_file: Path | None = None,
) -> tuple[UNet2DModel, DDPMScheduler]:
    """Train an ε-prediction DDPM (Ho et al. 2020) on ``images`` (``(N, C, H, W)`` in ``[0, 1]``).

    Each step draws ``x ∈ [-1, 1]``, ``t ~ U{0..T-1}``, ``ε ~ N(0, I)`` and minimises
    ``‖ε - ε_θ(sqrt(ᾱ_t) x + sqrt(1 - ᾱ_t) ε, t)‖²`` with AdamW, the learning rate decaying
    from ``lr`` to 0 on a cosine schedule over ``steps``. All randomness (including
    the default :func:`build_digits_unet` initialisation) derives from ``seed``; the model is
    trained on ``images.device``. Returns the UNet (in eval mode) and its scheduler. Given
    ``state_file``, an interrupted run resumes from the last step saved there
    (:mod:`dualrs.training_state`, a step standing for an epoch) with the weights of an uninterrupted run.
    """
    device = images.device
    channels, size = images.shape[1], images.shape[-1]
    if unet is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet = build_digits_unet(sample_size=size, channels=channels)
    if unet.config.in_channels != channels or unet.config.out_channels != channels:
        raise ValueError(
            f"epsilon training needs a UNet with {channels} input and output channels, got "
            f"{unet.config.in_channels} -> {unet.config.out_channels}"
        )
    unet = unet.to(device).train()
    scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, prediction_type="epsilon")
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr)
    lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    generator = torch.Generator(device=device).manual_seed(seed)
    data = images.float() * 2.0 - 1.0
    settings = {"loop": "ddpm", "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                "num_train_timesteps": num_train_timesteps, "items": len(images)}
    state = None if state_file is None else TrainingState(state_file, settings, unet)
    losses = [] if state is None else state.restore(unet, optimizer, lr_schedule, generator, steps_per_epoch=1)
    bar = progress_bar(range(len(losses), steps), "train ddpm", disable=not progress)
    for _ in bar:
        x0 = data[torch.randint(len(data), (batch_size,), generator=generator, device=device)]
        noise = torch.randn(x0.shape, generator=generator, device=device)
        t = torch.randint(num_train_timesteps, (batch_size,), generator=generator, device=device)
        loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr_schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        if state is not None:
            state.save_if_due(unet, optimizer, generator, losses)
    return unet.eval(), scheduler


def save_denoiser(
    unet: UNet2DModel,
    scheduler: DDPMScheduler,
    path: str | os.PathLike[str],
    conditioning: Mapping[str, Any] | None = None,
) -> None:
    """Atomically write a ``DDPMPipeline`` directory loadable by :meth:`DiffusionDenoiser.from_pretrained`.

    ``conditioning``, when given, is written as ``conditioning.json`` beside the pipeline. The
    pipeline is saved into a temporary sibling directory and renamed onto ``path``; an
    existing ``path`` is replaced only once the new directory is complete. The saved denoiser supersedes
    the training state kept beside it (:func:`~dualrs.training_state.state_file_for`), which is removed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(str(tmp))
        if conditioning is not None:
            (tmp / CONDITIONING_FILE).write_text(json.dumps(conditioning, indent=2) + "\n")
        give_default_modes(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    state_file_for(target).unlink(missing_ok=True)

"""Convert the original openai diffusion checkpoints to a directory :class:`DiffusionDenoiser` loads.

Denoised smoothing (Carlini et al. 2023) uses two public checkpoints saved by the original code
as plain state dicts: improved-diffusion's ``cifar10_uncond_50M_500K.pt`` (Nichol & Dhariwal 2021)
and guided-diffusion's ``256x256_diffusion_uncond.pt`` (Dhariwal & Nichol 2021). Both networks
are the ``UNetModel`` of ``unet.py`` in those repositories, described by the flags of their
``script_util.py``; this module maps them onto diffusers' ``UNet2DModel``:

* ``ResBlock`` → ``ResnetBlock2D`` (``use_scale_shift_norm``: ``GN(h)·(1 + s) + b`` =
  ``resnet_time_scale_shift="scale_shift"``; ``resblock_updown``: the resnet down/up-sampling
  blocks, ``downsample_type = upsample_type = "resnet"``);
* ``AttentionBlock`` → ``Attention`` with a 32-group GroupNorm (eps 1e-5, also in the middle
  block: ``attn_norm_num_groups=32``); the legacy ``qkv`` rows are ordered (head, q/k/v, channel)
  (``QKVAttentionLegacy``), the new order (q/k/v, head, channel) (``QKVAttention``);
* ``timestep_embedding`` (``nn.py``) = ``[cos(t·f), sin(t·f)]``, ``f_i = 10000^(-i/half)``:
  ``flip_sin_to_cos=True``, ``freq_shift=0``.

The schedule becomes a ``DDPMScheduler`` (``gaussian_diffusion.py::get_named_beta_schedule``:
cosine = ``squaredcos_cap_v2``, linear from ``1e-4·1000/T`` to ``0.02·1000/T``), and
``rescale_timesteps`` (the network is handed ``t·1000/T``) becomes ``timestep_scale`` in
``conditioning.json``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from diffusers import DDPMScheduler, UNet2DModel

from dualrs.denoise import save_denoiser
from dualrs.models import read_foreign_state_dict

#: Flags of the original scripts that change neither the network's output nor ``x̂0``.
IGNORED_FLAGS = frozenset({"use_checkpoint", "use_fp16", "timestep_respacing", "use_kl", "rescale_learned_sigmas"})

#: ``image_size`` → default ``channel_mult`` (``create_model`` in both ``script_util.py``).
DEFAULT_CHANNEL_MULT = {32: "1,2,2,2", 64: "1,2,3,4", 128: "1,1,2,3,4", 256: "1,1,2,2,4,4"}


@dataclass(frozen=True)
class OpenAIFlags:
    """The original scripts' model and diffusion flags (names and defaults of ``script_util.py``).

    ``rescale_timesteps`` has no default: improved-diffusion defaults to True, guided-diffusion
    to False. ``attention_resolutions`` are resolutions (``"16,8"``), ``channel_mult`` a comma
    list (empty: the default for ``image_size``).
    """

    image_size: int
    num_channels: int
    num_res_blocks: int
    attention_resolutions: str
    diffusion_steps: int
    noise_schedule: str
    rescale_timesteps: bool
    learn_sigma: bool = False
    num_heads: int = 4
    num_heads_upsample: int = -1
    num_head_channels: int = -1
    channel_mult: str = ""
    dropout: float = 0.0
    use_scale_shift_norm: bool = True
    resblock_updown: bool = False
    use_new_attention_order: bool = False
    predict_xstart: bool = False
    sigma_small: bool = False
    class_cond: bool = False

    def __post_init__(self) -> None:
        if self.class_cond:
            raise ValueError("class-conditional checkpoints are not supported: the denoiser has no labels")
        if self.noise_schedule not in ("linear", "cosine"):
            raise ValueError(f"noise_schedule must be 'linear' or 'cosine', got {self.noise_schedule!r}")
        if not self.channel_mult and self.image_size not in DEFAULT_CHANNEL_MULT:
            raise ValueError(f"no default channel_mult for image_size {self.image_size}; give channel_mult")
        mults = self.mults
        if mults[0] != 1:
            raise ValueError(f"channel_mult must start with 1 (UNet2DModel embeds t at the first width), got {mults}")
        if self.image_size % 2 ** (len(mults) - 1):
            raise ValueError(f"image_size {self.image_size} is not divisible by 2^{len(mults) - 1}")

    @classmethod
    def from_dict(cls, flags: Mapping[str, Any]) -> OpenAIFlags:
        """Build from a flags mapping (e.g. the scripts' JSON); unknown flags are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(flags) - known - IGNORED_FLAGS)
        if unknown:
            raise ValueError(f"unknown flag(s) {unknown}; known: {sorted(known | IGNORED_FLAGS)}")
        values = {k: v for k, v in flags.items() if k in known}
        for name in ("attention_resolutions", "channel_mult"):
            if isinstance(values.get(name), (list, tuple)):
                values[name] = ",".join(str(v) for v in values[name])
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.default is dataclasses.MISSING and f.name not in values)
        if missing:
            raise ValueError(f"missing flag(s) {missing}")
        return cls(**values)

    @property
    def mults(self) -> tuple[int, ...]:
        """Channel multiplier per level."""
        text = self.channel_mult or DEFAULT_CHANNEL_MULT[self.image_size]
        return tuple(int(m) for m in text.split(","))

    @property
    def attention_rates(self) -> frozenset[int]:
        """Downsampling rates ``image_size // resolution`` with attention (``create_model``)."""
        return frozenset(self.image_size // int(r) for r in self.attention_resolutions.split(","))

    @property
    def timestep_scale(self) -> float:
        """What the network is handed per timestep index: ``1000 / T`` with ``rescale_timesteps``."""
        return 1000.0 / self.diffusion_steps if self.rescale_timesteps else 1.0

    def heads(self, channels: int, upsample: bool) -> int:
        """Attention heads at width ``channels`` (``AttentionBlock`` in ``unet.py``)."""
        if self.num_head_channels != -1:
            return channels // self.num_head_channels
        if upsample and self.num_heads_upsample != -1:
            return self.num_heads_upsample
        return self.num_heads


PRESETS: dict[str, OpenAIFlags] = {
    "cifar10_uncond_50M_500K": OpenAIFlags(
        image_size=32, num_channels=128, num_res_blocks=3, num_heads=4, attention_resolutions="16,8",
        dropout=0.3, learn_sigma=True, use_scale_shift_norm=True, diffusion_steps=4000,
        noise_schedule="cosine", rescale_timesteps=True,
    ),
    "256x256_diffusion_uncond": OpenAIFlags(
        image_size=256, num_channels=256, num_res_blocks=2, num_head_channels=64,
        attention_resolutions="32,16,8", learn_sigma=True, use_scale_shift_norm=True, resblock_updown=True,
        diffusion_steps=1000, noise_schedule="linear", rescale_timesteps=False,
    ),
}


class Module(NamedTuple):
    """An original module (state-dict prefix), its diffusers counterpart and how to convert it."""

    original: str
    diffusers: str
    kind: str  # "plain" (same tensors), "resnet" or "attention"
    width: int = 0  # channels of an attention module
    heads: int = 0


class Leaf(NamedTuple):
    """One original tensor: its expected shape and the diffusers tensors it becomes."""

    key: str
    shape: tuple[int, ...]
    convert: Callable[[torch.Tensor], dict[str, torch.Tensor]]


RESNET_PARTS = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
                "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}


def unet_config(flags: OpenAIFlags) -> dict[str, Any]:
    """``UNet2DModel`` config of the original ``UNetModel`` built from ``flags``."""
    attn = [2**level in flags.attention_rates for level in range(len(flags.mults))]
    plain_down, plain_up = ("ResnetDownsampleBlock2D", "ResnetUpsampleBlock2D") if flags.resblock_updown \
        else ("DownBlock2D", "UpBlock2D")
    resample = "resnet" if flags.resblock_updown else "conv"
    return dict(
        sample_size=flags.image_size,
        in_channels=3,
        out_channels=6 if flags.learn_sigma else 3,
        block_out_channels=tuple(m * flags.num_channels for m in flags.mults),
        layers_per_block=flags.num_res_blocks,
        down_block_types=tuple("AttnDownBlock2D" if a else plain_down for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else plain_up for a in reversed(attn)),
        downsample_type=resample,
        upsample_type=resample,
        attention_head_dim=math.gcd(*(m.width // m.heads for m in module_map(flags) if m.kind == "attention")),
        norm_num_groups=32,
        attn_norm_num_groups=32,
        norm_eps=1e-5,
        resnet_time_scale_shift="scale_shift" if flags.use_scale_shift_norm else "default",
        dropout=flags.dropout,
        flip_sin_to_cos=True,
        freq_shift=0,
    )


def module_map(flags: OpenAIFlags) -> Iterator[Module]:
    """Walk the original ``UNetModel.__init__`` (``unet.py``) and name each module's counterpart."""
    yield Module("time_embed.0", "time_embedding.linear_1", "plain")
    yield Module("time_embed.2", "time_embedding.linear_2", "plain")
    yield Module("input_blocks.0.0", "conv_in", "plain")
    mults, rates, updown = flags.mults, flags.attention_rates, flags.resblock_updown
    index = 1
    for level, mult in enumerate(mults):
        width = mult * flags.num_channels
        for j in range(flags.num_res_blocks):
            yield Module(f"input_blocks.{index}.0", f"down_blocks.{level}.resnets.{j}", "resnet")
            if 2**level in rates:
                yield Module(f"input_blocks.{index}.1", f"down_blocks.{level}.attentions.{j}", "attention",
                             width, flags.heads(width, upsample=False))
            index += 1
        if level < len(mults) - 1:
            yield (Module(f"input_blocks.{index}.0", f"down_blocks.{level}.downsamplers.0", "resnet") if updown
                   else Module(f"input_blocks.{index}.0.op", f"down_blocks.{level}.downsamplers.0.conv", "plain"))
            index += 1
    width = mults[-1] * flags.num_channels
    yield Module("middle_block.0", "mid_block.resnets.0", "resnet")
    yield Module("middle_block.1", "mid_block.attentions.0", "attention", width, flags.heads(width, upsample=False))
    yield Module("middle_block.2", "mid_block.resnets.1", "resnet")
    index = 0
    for up, level in enumerate(reversed(range(len(mults)))):
        width, attn = mults[level] * flags.num_channels, 2**level in rates
        for i in range(flags.num_res_blocks + 1):
            yield Module(f"output_blocks.{index}.0", f"up_blocks.{up}.resnets.{i}", "resnet")
            if attn:
                yield Module(f"output_blocks.{index}.1", f"up_blocks.{up}.attentions.{i}", "attention",
                             width, flags.heads(width, upsample=True))
            if level and i == flags.num_res_blocks:
                slot = f"output_blocks.{index}.{2 if attn else 1}"
                yield (Module(slot, f"up_blocks.{up}.upsamplers.0", "resnet") if updown
                       else Module(f"{slot}.conv", f"up_blocks.{up}.upsamplers.0.conv", "plain"))
            index += 1
    yield Module("out.0", "conv_norm_out", "plain")
    yield Module("out.2", "conv_out", "plain")


def _copy(name: str) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    return lambda w: {name: w}


def _linear_from_conv1d(name: str) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """A 1×1 ``Conv1d`` weight ``(out, in, 1)`` is the ``Linear`` weight ``(out, in)``."""
    return lambda w: {name: w[..., 0] if w.dim() == 3 else w}


def _split_qkv(prefix: str, suffix: str, heads: int, legacy: bool) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """Split the fused ``qkv`` rows: (head, q/k/v, channel) when ``legacy``, else (q/k/v, head, channel)."""

    def convert(w: torch.Tensor) -> dict[str, torch.Tensor]:
        w = w[..., 0] if w.dim() == 3 else w
        width, rest = w.shape[0] // 3, w.shape[1:]
        if legacy:
            parts = w.reshape(heads, 3, width // heads, *rest).transpose(0, 1)
        else:
            parts = w.reshape(3, heads, width // heads, *rest)
        q, k, v = parts.reshape(3, width, *rest)
        return {f"{prefix}.to_{n}.{suffix}": t.clone() for n, t in zip("qkv", (q, k, v))}

    return convert


def leaves(flags: OpenAIFlags, target: Mapping[str, torch.Size]) -> list[Leaf]:
    """Every original tensor with its expected shape, given the diffusers model's shapes ``target``."""
    out: list[Leaf] = []
    for m in module_map(flags):
        if m.kind == "plain":
            pairs = [(m.original, m.diffusers)]
        elif m.kind == "resnet":
            pairs = [(f"{m.original}.{o}", f"{m.diffusers}.{d}") for o, d in RESNET_PARTS.items()
                     if f"{m.diffusers}.{d}.weight" in target]
        else:
            pairs = [(f"{m.original}.norm", f"{m.diffusers}.group_norm")]
        for o, d in pairs:
            out += [Leaf(f"{o}.{s}", tuple(target[f"{d}.{s}"]), _copy(f"{d}.{s}")) for s in ("weight", "bias")]
        if m.kind == "attention":
            width = m.width
            legacy = not flags.use_new_attention_order
            out += [
                Leaf(f"{m.original}.qkv.weight", (3 * width, width, 1),
                     _split_qkv(m.diffusers, "weight", m.heads, legacy)),
                Leaf(f"{m.original}.qkv.bias", (3 * width,), _split_qkv(m.diffusers, "bias", m.heads, legacy)),
                Leaf(f"{m.original}.proj_out.weight", (width, width, 1),
                     _linear_from_conv1d(f"{m.diffusers}.to_out.0.weight")),
                Leaf(f"{m.original}.proj_out.bias", (width,), _copy(f"{m.diffusers}.to_out.0.bias")),
            ]
    return out


def check_keys(state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]) -> None:
    """Raise one ``ValueError`` naming the first (sorted) missing, unexpected or wrong-shape key."""
    for key in sorted(set(state_dict) | set(expected)):
        if key not in state_dict:
            raise ValueError(f"checkpoint does not fit the flags: missing key {key!r} (shape {expected[key]})")
        if key not in expected:
            raise ValueError(f"checkpoint does not fit the flags: unexpected key {key!r}")
        shape = tuple(state_dict[key].shape)
        if shape != expected[key]:
            raise ValueError(
                f"checkpoint does not fit the flags: key {key!r} has shape {shape}, expected {expected[key]}")


def build_scheduler(flags: OpenAIFlags) -> DDPMScheduler:
    """``DDPMScheduler`` with the checkpoint's schedule (``get_named_beta_schedule``, ``gaussian_diffusion.py``)."""
    if flags.learn_sigma:
        variance = "learned_range"
    else:
        variance = "fixed_small" if flags.sigma_small else "fixed_large"
    common = dict(num_train_timesteps=flags.diffusion_steps, variance_type=variance,
                  prediction_type="sample" if flags.predict_xstart else "epsilon")
    if flags.noise_schedule == "cosine":
        return DDPMScheduler(beta_schedule="squaredcos_cap_v2", **common)
    scale = 1000.0 / flags.diffusion_steps
    return DDPMScheduler(beta_schedule="linear", beta_start=scale * 1e-4, beta_end=scale * 0.02, **common)


def attention_head_overrides(flags: OpenAIFlags, head_dim: int) -> dict[str, int]:
    """Attention modules whose head count differs from ``width // head_dim`` (see ``set_attention_heads``)."""
    return {m.diffusers: m.heads for m in module_map(flags)
            if m.kind == "attention" and m.width // head_dim != m.heads}


def convert_openai_checkpoint(
    state_dict_or_path: Mapping[str, torch.Tensor] | str | os.PathLike[str],
    flags: OpenAIFlags | Mapping[str, Any],
    out_dir: str | os.PathLike[str],
) -> None:
    """Write an improved-/guided-diffusion checkpoint as a denoiser directory at ``out_dir``.

    The directory holds the ``UNet2DModel`` (safetensors + config), the ``DDPMScheduler`` and
    ``conditioning.json`` (``timestep_scale``, per-module ``attention_heads`` where the head dim
    is not uniform, and the original flags). The checkpoint is checked against ``flags`` before
    anything is written, and the directory appears only once complete.
    """
    flags = flags if isinstance(flags, OpenAIFlags) else OpenAIFlags.from_dict(flags)
    if isinstance(state_dict_or_path, Mapping):
        state_dict = state_dict_or_path
    else:
        state_dict = read_foreign_state_dict(state_dict_or_path, "diffusion checkpoint")
    config = unet_config(flags)
    with torch.device("meta"):
        unet = UNet2DModel(**config)
    target = {k: v.shape for k, v in unet.state_dict().items()}
    rules = leaves(flags, target)
    check_keys(state_dict, {leaf.key: leaf.shape for leaf in rules})
    converted: dict[str, torch.Tensor] = {}
    for leaf in rules:
        converted.update(leaf.convert(state_dict[leaf.key].to(torch.float32)))
    unet.load_state_dict(converted, strict=True, assign=True)
    conditioning = {
        "timestep_scale": flags.timestep_scale,
        "attention_heads": attention_head_overrides(flags, config["attention_head_dim"]),
        "flags": dataclasses.asdict(flags),
    }
    save_denoiser(unet.eval(), build_scheduler(flags), Path(out_dir), conditioning)

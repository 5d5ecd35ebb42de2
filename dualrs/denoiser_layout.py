"""Where a denoiser directory keeps its UNet and its noise schedule.

Imports neither torch nor diffusers, so that the workflow's plan checks a configured folder with the
rule :meth:`dualrs.denoise.DiffusionDenoiser.from_pretrained` loads it by, before any job starts.
"""
from __future__ import annotations

from pathlib import Path


def denoiser_folders(root: Path | str) -> tuple[Path, Path]:
    """(UNet folder, scheduler folder) of a denoiser directory.

    Accepted layouts: a pipeline directory with ``unet/`` and ``scheduler/`` subfolders (as written by
    ``DDPMPipeline.save_pretrained`` or :func:`dualrs.denoise.save_denoiser`), or a UNet directory
    (``config.json`` + weights) with a ``scheduler/`` subfolder or a ``scheduler_config.json``.
    FileNotFoundError names what is missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"diffusion model directory not found: {root}")
    unet_dir = root / "unet" if (root / "unet" / "config.json").is_file() else root
    if not (unet_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"no UNet config in {root}: expected {root / 'unet' / 'config.json'} or {root / 'config.json'}")
    sched_dir = root / "scheduler" if (root / "scheduler" / "scheduler_config.json").is_file() else root
    if not (sched_dir / "scheduler_config.json").is_file():
        raise FileNotFoundError(f"no scheduler config in {root}: expected "
                                f"{root / 'scheduler' / 'scheduler_config.json'} or {root / 'scheduler_config.json'}")
    return unet_dir, sched_dir

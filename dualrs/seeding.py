"""Per-sample random streams.

Noise for sample ``i`` of stage ``s`` comes from a generator seeded by ``(seed, s, i)``, so
certificates do not depend on sharding, batch size or resume point (DESIGN.md, "Randomness").
"""
from __future__ import annotations

import zlib

import numpy as np
import torch


def sample_seed(seed: int, stage: str, index: int) -> int:
    """A 63-bit seed derived from (config seed, stage name, sample index) by NumPy's SeedSequence."""
    entropy = [int(seed), zlib.crc32(stage.encode()), int(index)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


def sample_generator(seed: int, stage: str, index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded by :func:`sample_seed`."""
    generator = torch.Generator(device=device)
    generator.manual_seed(sample_seed(seed, stage, index))
    return generator

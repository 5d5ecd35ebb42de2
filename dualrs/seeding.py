"""Per-sample random streams and a repeatable process.

Noise for sample ``i`` of stage ``s`` comes from a generator seeded by ``(seed, s, i)``, so
certificates do not depend on sharding, batch size or resume point (docs/architecture.md, "Randomness").
:func:`deterministic` makes the rest of a job (weight initialisation, data order, kernels, thread
counts) a function of the seed and the thread count.
"""
from __future__ import annotations

import os
import random
import sys
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


#: cuBLAS workspace setting under which CUDA matmuls are reproducible (PyTorch, "Reproducibility").
CUBLAS_WORKSPACE_CONFIG = ":4096:8"


def use_deterministic_kernels() -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` without its import of
    ``torch._inductor`` (1.3 s per job), which it loads only to make ``torch.compile`` deterministic
    too: dualrs compiles nothing, and where inductor is already loaded the public call sets both."""
    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(True, warn_only=True)


def deterministic(seed: int, threads: int | None = None) -> None:
    """Seed every global generator and restrict torch to deterministic kernels, for one job.

    Seeds Python's ``random``, NumPy's legacy global generator and torch on every device (an
    unseeded torch process starts from a random seed); makes torch pick deterministic kernels
    (the kernel switch of ``torch.use_deterministic_algorithms``; an op that has none, such as the CUDA
    backward of ``AdaptiveAvgPool2d``, warns in the job's log instead of stopping it), turns off cuDNN autotuning
    and sets ``CUBLAS_WORKSPACE_CONFIG`` unless it is set, as CUDA matmuls need before cuBLAS starts.
    With ``threads``, torch uses that many intra-op threads (a CPU reduction's order may depend on
    them) and, where the pool has not started yet, as many inter-op threads (these only schedule
    independent ops, so the numbers never depend on them).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    use_deterministic_kernels()
    torch.backends.cudnn.benchmark = False
    if threads is not None:
        torch.set_num_threads(threads)
        if torch.get_num_interop_threads() != threads:
            try:
                torch.set_num_interop_threads(threads)
            except RuntimeError:  # the inter-op pool of this process has already started
                pass

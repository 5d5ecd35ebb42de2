"""keep_freed_memory: a batch-sized block freed and allocated again reuses the process's pages."""
import subprocess
import sys

import pytest

from dualrs.host_memory import keep_freed_memory

PAGE_FAULTS = """
import resource, sys
from dualrs.host_memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):  # a batch: eight 4 MiB tensors (zero-filled: every page touched), then all freed
    batch = [bytearray(4 * 2**20) for _ in range(8)]
    del batch
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def minor_faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PAGE_FAULTS, mode], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_batches_are_reused_instead_of_mapped_afresh():
    _, default = minor_faults("default")
    applied, kept = minor_faults("keep")
    assert applied == "True"
    assert default > 40 * 8 * 1000  # glibc's default trims the freed batch: its pages fault again
    assert kept < 2 * 8 * 1024  # only the first batch touches new pages


def test_the_numbers_do_not_change():
    import torch

    torch.manual_seed(0)
    before = torch.nn.functional.conv2d(torch.randn(64, 3, 8, 8), torch.randn(16, 3, 3, 3))
    keep_freed_memory()
    torch.manual_seed(0)
    after = torch.nn.functional.conv2d(torch.randn(64, 3, 8, 8), torch.randn(16, 3, 3, 3))
    assert torch.equal(before, after)

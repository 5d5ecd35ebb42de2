"""dualrs: dual randomized smoothing (Sun, Mao & Vechev 2025) on top of Cohen et al.'s randomized smoothing.

The public classes are imported on first use, so ``dualrs`` commands that only handle tables start
without loading torch.
"""
from importlib import import_module

_EXPORTS = {"ABSTAIN": "dualrs.smoothing", "Smooth": "dualrs.smoothing", "DualCertificate": "dualrs.dual",
            "DualSmooth": "dualrs.dual", "Router": "dualrs.router", "RoutedSmooth": "dualrs.routed",
            "certify_dataset": "dualrs.certify"}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dualrs' has no attribute {name!r}")

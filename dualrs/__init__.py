"""dualrs: dual randomized smoothing (Sun, Mao & Vechev 2025) on top of Cohen et al.'s randomized smoothing."""
from dualrs.dual import DualCertificate, DualSmooth
from dualrs.smoothing import ABSTAIN, Smooth

__all__ = ["ABSTAIN", "DualCertificate", "DualSmooth", "Smooth"]
__version__ = "0.1.0"

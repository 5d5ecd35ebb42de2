"""Shared helpers of the statistical tests: base classifiers with known p_A and binomial tolerances."""
import torch
from scipy.stats import binom

# Each statistical check fails by chance with probability about TAIL (two-sided checks 2·TAIL).
TAIL = 1e-4


def upper_tolerance(trials: int, p: float, tail: float = TAIL) -> int:
    """The largest failure count Binomial(trials, p) exceeds with probability below ``tail``."""
    return int(binom.ppf(1 - tail, trials, p))


class HalfSpace(torch.nn.Module):
    """f(x) = 1[w·x + b > 0] as two logits (−s, s) with s = w·x + b.

    Under x + δ, δ ~ N(0, σ²I): p_1 = Φ((w·x + b)/(σ‖w‖)), so the exact smoothed radius of class 1
    is (w·x + b)/‖w‖, the distance to the hyperplane.
    """

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.register_buffer("w", w.to(torch.float64))
        self.b = float(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).to(torch.float64) @ self.w + self.b
        return torch.stack([-s, s], dim=1)


class ConstantClass(torch.nn.Module):
    """Always class ``k`` of ``num_classes``, whatever the input."""

    def __init__(self, k: int, num_classes: int):
        super().__init__()
        self.register_buffer("logits", torch.nn.functional.one_hot(torch.tensor(k), num_classes).double())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


class FixedDistribution(torch.nn.Module):
    """Class c with probability probs[c] under x + δ, δ ~ N(0, σ²I), at x with x_0 = 0.

    The class is the bucket of Φ(x_0/σ) in the cumulative probabilities, so p_c under noise σ is
    exactly probs[c] whatever the other coordinates.
    """

    def __init__(self, probs: list[float], sigma: float):
        super().__init__()
        self.register_buffer("edges", torch.cumsum(torch.tensor(probs, dtype=torch.float64), 0)[:-1])
        self.num_classes, self.sigma = len(probs), float(sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.special.ndtr(x.flatten(1)[:, 0].to(torch.float64) / self.sigma)
        return torch.nn.functional.one_hot(torch.bucketize(u, self.edges), self.num_classes).double()

import math

import torch

from dualrs.models import create_model
from dualrs.train import Optim, consistency_loss, train_classifier, train_estimator
from torch.utils.data import TensorDataset


def test_consistency_loss_matches_its_definition():
    logits = torch.randn(3, 5, 4)
    p = logits.softmax(-1)
    p_mean = p.mean(0)
    kl = (p_mean * (p_mean.log() - p.log())).sum(-1).mean(0)
    entropy = -(p_mean * p_mean.log()).sum(-1)
    torch.testing.assert_close(consistency_loss(logits, 40.0, 0.5), (40 * kl + 0.5 * entropy).mean())


def test_consistency_loss_vanishes_for_identical_confident_copies():
    logits = torch.zeros(2, 3, 4)
    logits[..., 1] = 50.0
    assert consistency_loss(logits, 40.0, 0.5).item() < 1e-6
    uniform = torch.zeros(2, 3, 4)
    assert math.isclose(consistency_loss(uniform, 40.0, 0.5).item(), 0.5 * math.log(4), rel_tol=1e-5)


def _blobs(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.2
    x[y == 1, :, :4] += 0.8  # class 1: bright top half
    return x, y


def test_noise_augmented_training_learns_and_is_reproducible():
    x, y = _blobs()
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = create_model("digits_cnn", 2, 1)
        history = train_classifier(model, TensorDataset(x, y), 0.25, Optim(8, 32, 3e-3), seed=1)
        runs.append(model)
    assert history[-1] < 0.5 * history[0]
    for a, b in zip(runs[0].parameters(), runs[1].parameters()):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        accuracy = (runs[0](x + 0.25 * torch.randn_like(x)).argmax(1) == y).float().mean()
    assert accuracy > 0.9


def test_estimator_fits_soft_targets_under_noise():
    x, y = _blobs(seed=2)
    targets = torch.nn.functional.one_hot(y, 2).float() * 0.9 + 0.05
    torch.manual_seed(0)
    model = create_model("digits_cnn", 2, 1)
    history = train_estimator(model, x, targets, torch.ones(len(x)), 0.25, Optim(8, 32, 3e-3), seed=0, lam=1.0)
    assert history[-1] < history[0]
    with torch.no_grad():
        votes = model(x + 0.25 * torch.randn_like(x)).argmax(1)
    assert (votes == y).float().mean() > 0.9


class _Recorder(torch.nn.Module):
    """Identity that records how many inputs it saw and their pooled standard deviation."""

    def __init__(self):
        super().__init__()
        self.seen, self.squares = 0, 0.0

    def forward(self, x):
        self.seen += len(x)
        self.squares += float((x.double() ** 2).sum())
        return x


def test_shared_classifier_sees_each_input_at_its_routed_sigma():
    from dualrs.train import Optim, train_classifier_at_routed_sigmas

    shared = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    recorders = {0.25: _Recorder(), 1.0: _Recorder()}
    views = {s: torch.nn.Sequential(r, shared) for s, r in recorders.items()}
    x = torch.zeros(30, 1, 4, 4)
    data = torch.utils.data.TensorDataset(x, torch.arange(30) % 3)
    routed = [0.25] * 10 + [1.0] * 20
    before = shared[1].weight.detach().clone()
    history = train_classifier_at_routed_sigmas(views, data, routed, Optim(3, 10, 0.01), seed=0)
    assert len(history) == 3 and not torch.equal(before, shared[1].weight)
    assert (recorders[0.25].seen, recorders[1.0].seen) == (10 * 3, 20 * 3)
    for sigma, recorder in recorders.items():  # inputs are zeros, so what a view sees is σ·δ
        std = (recorder.squares / (recorder.seen * 16)) ** 0.5
        assert abs(std - sigma) < 0.1 * sigma

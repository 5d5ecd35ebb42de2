import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from dualrs import tasks
from dualrs.data import prepare_dataset
from dualrs.models import create_model
from dualrs.settings import EstimatorSettings
from dualrs.tables import write_table
from dualrs.train import Optim, consistency_loss, estimator_loss, train_classifier, train_estimator
from torch.utils.data import TensorDataset


def test_consistency_loss_matches_its_definition():
    logits = torch.randn(3, 5, 4)
    p = logits.softmax(-1)
    p_mean = p.mean(0)
    kl = (p_mean * (p_mean.log() - p.log())).sum(-1).mean(0)
    entropy = -(p_mean * p_mean.log()).sum(-1)
    torch.testing.assert_close(consistency_loss(logits, 40.0, 0.5), 40 * kl + 0.5 * entropy)


def test_consistency_loss_vanishes_for_identical_confident_copies():
    logits = torch.zeros(2, 3, 4)
    logits[..., 1] = 50.0
    assert consistency_loss(logits, 40.0, 0.5).max().item() < 1e-6
    uniform = torch.zeros(2, 3, 4)
    torch.testing.assert_close(consistency_loss(uniform, 40.0, 0.5), torch.full((3,), 0.5 * math.log(4)))


def _two_copies():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [1.0, -1.0]]])  # (m=2, B=2, K=2)
    target = torch.tensor([[0.7, 0.3], [0.2, 0.8]])
    return logits, target


def test_estimator_loss_weights_both_terms_by_the_class_balance():
    logits, target = _two_copies()
    w_e, w_r = torch.tensor([3.0, 0.5]), torch.tensor([2.0, 0.25])
    soft_ce = -(target * F.log_softmax(logits, -1)).sum(-1).mean(0)
    con = consistency_loss(logits, 40.0, 0.5)
    new = estimator_loss(logits, target, w_e, w_r, 40.0, 0.5, "both")
    torch.testing.assert_close(new, (w_e * (soft_ce + w_r * con)).mean())
    old = (w_e * soft_ce).mean() + (w_r * con).mean()  # w_e on the soft CE only
    assert not torch.isclose(new, old, rtol=1e-3)
    # by hand for sample 0: p_1 = softmax(2, 0), p_2 = (1/2, 1/2)
    p1 = torch.tensor([math.exp(2) / (1 + math.exp(2)), 1 / (1 + math.exp(2))])
    p2 = torch.tensor([0.5, 0.5])
    p_bar = (p1 + p2) / 2
    kl = ((p_bar * (p_bar / p1).log()).sum() + (p_bar * (p_bar / p2).log()).sum()) / 2
    ce = -(target[0] * (p1.log() + p2.log()) / 2).sum()
    torch.testing.assert_close(con[0], 40 * kl - 0.5 * (p_bar * p_bar.log()).sum())
    sample_1 = w_e[1] * (soft_ce[1] + w_r[1] * con[1])
    torch.testing.assert_close(new, (3.0 * (ce + 2.0 * con[0]) + sample_1) / 2)


def test_estimator_loss_without_a_second_copy_has_no_consistency_term():
    logits, target = _two_copies()
    w_e = torch.tensor([3.0, 0.5])
    soft_ce = -(target * F.log_softmax(logits[:1], -1)).sum(-1)[0]
    torch.testing.assert_close(estimator_loss(logits[:1], target, w_e, torch.ones(2), 40.0, 0.5, "both"),
                               (w_e * soft_ce).mean())


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
    g = torch.Generator().manual_seed(4)
    balance, radius = 0.5 + torch.rand(len(x), generator=g), 2 * torch.rand(len(x), generator=g)
    history = train_estimator(model, x, targets, balance, 0.25, Optim(8, 32, 3e-3), seed=0, lam=1.0,
                              eta=0.5, copies=2, class_weight="both", radius=radius)
    assert history[-1] < 0.7 * history[0]
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


class _PerSampleStd(torch.nn.Module):
    """A classifier that keeps the standard deviation of each input it sees (its inputs are pure noise)."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(256, 3)
        self.stds: list[float] = []

    def forward(self, x):
        self.stds += x.flatten(1).pow(2).mean(1).sqrt().tolist()
        return self.head(x.flatten(1))


@pytest.mark.parametrize("sigmas", [[0.25], [0.25, 1.0]])
def test_a_classifier_for_every_sigma_draws_each_inputs_sigma_uniformly(sigmas):
    model = _PerSampleStd()
    data = TensorDataset(torch.zeros(100, 1, 16, 16), torch.arange(100) % 3)
    train_classifier(model, data, sigmas[0] if len(sigmas) == 1 else sigmas, Optim(4, 20, 0.01), seed=0)
    stds = np.array(model.stds)
    assert len(stds) == 400
    nearest = np.array(sigmas)[np.abs(np.log(stds[:, None] / np.array(sigmas))).argmin(axis=1)]
    assert np.all(np.abs(stds / nearest - 1) < 0.25)  # 256 draws: the std of one input is within 25% of its σ
    for sigma in sigmas:  # 400 fair draws: each share within 0.1 of 1/|Σ| (about 4 standard deviations)
        assert abs(np.mean(nearest == sigma) - 1 / len(sigmas)) < 0.1
    assert all(len(set(batch)) == len(sigmas) for batch in nearest.reshape(20, 20))  # drawn per input, not per batch


@pytest.fixture(scope="module")
def digits_labels(tmp_path_factory):
    """Prepared digits and label tables of two sigmas over 60 training inputs, 7 of them certified under none."""
    root = tmp_path_factory.mktemp("estimator")
    prepare_dataset("digits", root / "data", seed=0)
    idx = np.arange(60)
    rng = np.random.default_rng(0)
    paths = {}
    for k, sigma in enumerate((0.25, 1.0)):
        correct = np.ones(len(idx), dtype=int)
        correct[:7] = 0
        correct[7 + k::2] = 0  # every other remaining input is certified under one sigma only
        frame = pd.DataFrame({"idx": idx, "label": 0, "predict": 0, "count": 10, "pA_lower": 0.9,
                              "radius": rng.uniform(0.1, 2 * sigma, len(idx)), "correct": correct})
        paths[sigma] = root / f"sigma{sigma}.tsv"
        write_table(paths[sigma], frame)
    return root, paths


@pytest.mark.parametrize("form", ["strong", "weak", "none"])
def test_task_drops_uncertified_inputs_and_passes_both_weights(digits_labels, tmp_path, monkeypatch, capsys, form):
    root, paths = digits_labels
    seen = {}

    def record(model, x, targets, balance, *args, **kwargs):
        seen.update(x=x, targets=targets, balance=balance, radius=kwargs["radius"])
        return [1.0]

    monkeypatch.setattr(tasks, "train_estimator", record)
    out = tmp_path / "estimator.safetensors"
    settings = EstimatorSettings("digits_cnn", 1.0, Optim(1, 16, 1e-3), 0, radius_weight=form)
    tasks.train_estimator_model(tasks.DataRef("digits", root / "data"), paths, None, out, settings, "cpu")
    frames = [pd.read_csv(paths[s], sep="\t") for s in (0.25, 1.0)]
    radii = np.stack([np.where(f["correct"] == 1, f["radius"], 0.0) for f in frames], axis=1)[7:]
    assert "dropped 7 of 60 training samples" in capsys.readouterr().out
    assert len(seen["x"]) == 53
    np.testing.assert_allclose(seen["targets"].numpy(), np.exp(radii) / np.exp(radii).sum(1, keepdims=True),
                               rtol=1e-6)
    expected_radius = {"strong": radii[:, 1], "weak": radii[:, 0], "none": np.ones(53)}[form]
    np.testing.assert_allclose(seen["radius"].numpy(), expected_radius, rtol=1e-6)
    best = radii.argmax(1)
    np.testing.assert_allclose(seen["balance"].numpy(), 53 / np.bincount(best)[best], rtol=1e-6)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["temperature"] is None and meta["radius_weight"] == form
    assert meta["dropped_uncertified"] == 7 and meta["train_samples"] == 53


def test_router_radius_weight_uses_each_experts_sigma(digits_labels, tmp_path, monkeypatch):
    root, paths = digits_labels
    seen = {}
    monkeypatch.setattr(tasks, "train_estimator", lambda *args, **kwargs: seen.update(radius=kwargs["radius"]) or [])
    experts = {"wide": paths[1.0], "narrow": paths[0.25]}  # class order: the largest sigma first
    out = tmp_path / "router.safetensors"
    data = tasks.DataRef("digits", root / "data")
    settings = EstimatorSettings("digits_cnn", 1.0, Optim(1, 16, 1e-3), 0, temperature=0.5, radius_weight="strong",
                                 expert_sigmas={"narrow": 0.25, "wide": 1.0})
    tasks.train_estimator_model(data, experts, None, out, settings, "cpu")
    wide = pd.read_csv(paths[1.0], sep="\t")
    expected = np.where(wide["correct"] == 1, wide["radius"], 0.0)[7:]
    np.testing.assert_allclose(seen["radius"].numpy(), expected, rtol=1e-6)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["expert_sigmas"] == [1.0, 0.25] and meta["temperature"] == 0.5
    with pytest.raises(ValueError, match="needs the sigma of every expert"):
        tasks.train_estimator_model(data, experts, None, out,
                                    EstimatorSettings("digits_cnn", 1.0, Optim(1, 16, 1e-3), 0, radius_weight="weak"),
                                    "cpu")

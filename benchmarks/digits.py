"""The digits experiment's data and models for the benchmarks: checkpoints of the pipeline when
present, else small ``digits_cnn`` models trained here in seconds.

Quick training: each classifier for σ under Gaussian noise σ; the estimator on soft labels
softmax(r/τ) from per-σ radii σ·Φ⁻¹(p̲) with p̲ the Clopper–Pearson bound of ``label_votes``
noisy votes per training input (the pipeline certifies with n_label votes instead).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import norm

from dualrs import data as datasets
from dualrs.assembly import DataSpec, load_classifiers, load_estimator
from dualrs.labels import class_balance_weights, soft_labels
from dualrs.models import create_model
from dualrs.settings import EstimatorSettings, default
from dualrs.smoothing import clopper_pearson_lower
from dualrs.train import Optim, train_classifier, train_estimator

DIGITS = DataSpec("digits", num_classes=10, in_chans=1)


@dataclass(frozen=True)
class DigitsModels:
    classifiers: dict[float, torch.nn.Module]
    estimator: torch.nn.Module
    source: str


def load_digits(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train and test split (x in [0,1], shape N×1×8×8; labels) as the pipeline prepares them."""
    with tempfile.TemporaryDirectory() as root:
        datasets.prepare_dataset("digits", Path(root), seed=seed)
        splits = {}
        for split in ("train", "test"):
            dataset = datasets.load_split("digits", Path(root), split)
            splits[split] = dataset.tensors
    return splits


def digits_models(
    models_dir: Path, sigmas: list[float], sigma_e: float, train: tuple[torch.Tensor, torch.Tensor],
    epochs: int, label_votes: int, seed: int,
) -> DigitsModels:
    """Round-0 checkpoints from ``models_dir`` if all exist (checked as the pipeline checks them), else freshly
    trained models (on CPU); ``sigmas`` ascending."""
    paths = {s: models_dir / f"classifier_sigma{s:g}.safetensors" for s in sigmas}
    estimator_path = models_dir / "estimator_it0.safetensors"
    if all(p.is_file() for p in [*paths.values(), estimator_path]):
        cpu = torch.device("cpu")
        classifiers, _ = load_classifiers(paths, cpu, DIGITS)
        estimator = load_estimator(estimator_path, sigmas, cpu, DIGITS)
        return DigitsModels(classifiers, estimator, f"checkpoints in {models_dir}")
    x, y = train
    optim = Optim(epochs=epochs, batch_size=64, lr=1e-3)
    classifiers = {}
    for sigma in sigmas:
        torch.manual_seed(seed)
        classifiers[sigma] = create_model("digits_cnn", 10, 1)
        train_classifier(classifiers[sigma], torch.utils.data.TensorDataset(x, y), sigma, optim, seed,
                         desc=f"classifier sigma={sigma}")
    radii = np.stack([noisy_radii(classifiers[s], x, y, s, label_votes, seed) for s in sigmas], axis=1)
    torch.manual_seed(seed)
    estimator = create_model("digits_cnn", len(sigmas), 1)
    train_estimator(estimator, x, torch.as_tensor(soft_labels(radii, 0.1), dtype=torch.float32),
                    torch.as_tensor(class_balance_weights(radii), dtype=torch.float32), sigma_e, optim, seed,
                    lam=10.0, **{key: default(EstimatorSettings, key) for key in ("eta", "copies", "class_weight")})
    return DigitsModels(classifiers, estimator, f"trained here ({epochs} epochs)")


@torch.inference_mode()
def noisy_radii(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float, votes: int, seed: int,
) -> np.ndarray:
    """σ·Φ⁻¹(p̲) of the true class from ``votes`` noisy predictions per input (0 below ½)."""
    generator = torch.Generator().manual_seed(seed)
    correct = torch.zeros(len(x), dtype=torch.long)
    for _ in range(votes):
        noisy = x + sigma * torch.randn(x.shape, generator=generator)
        correct += (model(noisy).argmax(dim=1) == y).long()
    p_lower = clopper_pearson_lower(correct.numpy(), votes, 0.05)
    return np.where(p_lower > 0.5, sigma * norm.ppf(np.maximum(p_lower, 0.5)), 0.0)

"""Training loops: noise-augmented classifiers, the variance estimator, and finetuning.

- Classifier for σ (Cohen et al. 2019, Sec. 4): cross-entropy on x + δ, δ ~ N(0, σ²I); a classifier
  for every σ of Σ draws σ uniformly from Σ per input.
- Variance estimator (Sun et al. 2025, Sec. 5.1): mean_i w_e(i)·(softCE(i) + w_r(i)·L_con(i)) under
  noise σ_e, with the consistency regularization of Jeong & Shin (2020, eq. 6): for m noisy copies
  with predictions p_j and mean p̄, L_con = λ·(1/m)Σ_j KL(p̄ ‖ p_j) + η·H(p̄).
- Finetuning (Sun et al. 2025, Sec. 5.2): the estimator's majority vote under σ_e
  (:func:`dualrs.tasks.route_training_set`) picks σ̂ for each training input; the classifier for σ is
  then trained further on the inputs routed to σ with :func:`train_classifier`, or one shared
  (denoised) classifier on every input at its σ̂ with :func:`train_classifier_at_routed_sigmas`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from dualrs.models import enable_grad_checkpointing
from dualrs.progress import progress
from dualrs.training_state import TrainingState
from dualrs.validation import NonFiniteError


ClassWeight = Literal["both", "ce", "none"]
CLASS_WEIGHTS: tuple[ClassWeight, ...] = ("both", "ce", "none")


@dataclass(frozen=True)
class Optim:
    """Optimisation settings shared by all loops: Adam (or AdamW, decoupled weight decay) with cosine
    decay per step, or, given ``milestones``, the learning rate times ``gamma`` at each milestone epoch
    (the paper's CIFAR-10 estimator: AdamW, lr 0.01, weight decay 0.01, × 0.5 at epochs 30 and 60).

    GPU memory: each step of ``batch_size`` inputs may run as micro-batches of ``micro_batch_size`` whose
    gradients add up to the step's (the loss is a mean, so chunk k's loss is weighted |chunk k| / batch
    size); ``precision`` bf16 runs forward and backward under bfloat16 autocast on CUDA (weights, gradients
    and optimizer state stay float32); ``grad_checkpointing`` recomputes activations in backward."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    num_workers: int = 0
    optimizer: str = "adam"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5
    micro_batch_size: int | None = None
    precision: str = "fp32"
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be a positive integer, got {self.micro_batch_size!r}")
        if self.precision not in TRAIN_PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(TRAIN_PRECISIONS)}, got {self.precision!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        if list(self.milestones) != sorted(set(self.milestones)) or any(m < 1 for m in self.milestones):
            raise ValueError(f"milestones must be increasing positive epochs, got {list(self.milestones)}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must lie in (0, 1], got {self.gamma!r}")

    def build(self, parameters, steps_per_epoch: int):
        """The optimizer and a scheduler stepped once per batch."""
        optimizer = OPTIMIZERS[self.optimizer](parameters, lr=self.lr, weight_decay=self.weight_decay)
        if self.milestones:
            steps = [m * steps_per_epoch for m in self.milestones]
            scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=steps, gamma=self.gamma)
        else:
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.epochs * steps_per_epoch)
        return optimizer, scheduler


OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
TRAIN_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def train_classifier(
    model: nn.Module, data: Dataset, sigma: float | Sequence[float], optim: Optim, seed: int,
    device: torch.device | str = "cpu", desc: str = "classifier", state_file: Path | None = None,
) -> list[float]:
    """Minimise CE(f(x + δ), y), δ ~ N(0, σ²I); returns the mean loss of each epoch (resumable from
    ``state_file``, as every loop here). Given several σ, each input of each batch draws its σ
    uniformly from them: one classifier for every σ of Σ."""
    torch.manual_seed(seed)
    levels = [float(s) for s in ([sigma] if isinstance(sigma, (int, float)) else sigma)]
    level_table = torch.tensor(levels)

    def loss_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if len(levels) == 1:
            return F.cross_entropy(model(x + levels[0] * torch.randn_like(x)), y)
        drawn = level_table[torch.randint(len(levels), (len(x),))].to(x).view(-1, *[1] * (x.dim() - 1))
        return F.cross_entropy(model(x + drawn * torch.randn_like(x)), y)

    return _fit(model, data, loss_fn, optim, seed, device, desc, state_file)


def train_classifier_at_routed_sigmas(
    views: Mapping[float, nn.Module], data: Dataset, sigmas: Sequence[float], optim: Optim, seed: int,
    device: torch.device | str = "cpu", desc: str = "classifier", state_file: Path | None = None,
) -> list[float]:
    """One classifier finetuned with each input at the σ routed to it (Sun et al. 2025, Sec. 5.2):
    minimise mean_i CE(f_σᵢ(x_i + δ_i), y_i), δ_i ~ N(0, σᵢ²I), where ``views[σ]`` is the shared
    classifier seen through σ's denoiser (or the classifier itself) and ``sigmas[i]`` is input i's σ."""
    levels = sorted(views)
    level_of = torch.tensor([levels.index(float(s)) for s in sigmas])
    torch.manual_seed(seed)

    def loss_fn(x: torch.Tensor, y: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(())
        for k in level.unique().tolist():
            chosen, sigma = level == k, levels[k]
            logits = views[sigma](x[chosen] + sigma * torch.randn_like(x[chosen]))
            total = total + F.cross_entropy(logits, y[chosen], reduction="sum")
        return total / len(y)

    return _fit(nn.ModuleList(views.values()), _WithLevel(data, level_of), loss_fn, optim, seed, device, desc,
                state_file)


class _WithLevel(Dataset):
    """(x, y, level[i]) for the i-th item (x, y) of ``data``."""

    def __init__(self, data: Dataset, level: torch.Tensor):
        self.data, self.level = data, level

    def __len__(self) -> int:
        return len(self.level)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        x, y = self.data[i]
        return x, y, self.level[i]


def consistency_loss(logits: torch.Tensor, lam: float, eta: float) -> torch.Tensor:
    """Per-sample L_con = λ·mean_j KL(p̄ ‖ p_j) + η·H(p̄) for logits of shape (m, B, K): shape (B,)."""
    log_p = F.log_softmax(logits, dim=-1)
    p_mean = log_p.exp().mean(dim=0)
    log_p_mean = p_mean.clamp_min(1e-12).log()
    kl = (p_mean * (log_p_mean - log_p)).sum(dim=-1).mean(dim=0)
    entropy = -(p_mean * log_p_mean).sum(dim=-1)
    return lam * kl + eta * entropy


def estimator_loss(
    logits: torch.Tensor, target: torch.Tensor, balance: torch.Tensor, radius: torch.Tensor, lam: float, eta: float,
    class_weight: ClassWeight,
) -> torch.Tensor:
    """mean_i w_e(i)·(softCE(i) + w_r(i)·L_con(i)) (Sun et al. 2025, Sec. 5.1) for logits (m, B, K) of m noisy
    copies: softCE(i) = -mean_j Σ_k q_ik log p_jk(i); without a second copy (m = 1) there is no L_con.
    ``class_weight`` says where w_e applies: ``both`` terms (the paper), the soft ``ce`` only, or ``none``."""
    if class_weight not in CLASS_WEIGHTS:
        raise ValueError(f"class weight must be one of {CLASS_WEIGHTS}, got {class_weight!r}")
    w_e = torch.ones_like(balance) if class_weight == "none" else balance
    loss = w_e * -(target * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean(dim=0)
    if len(logits) > 1:
        w_con = w_e * radius if class_weight == "both" else radius
        loss = loss + w_con * consistency_loss(logits, lam, eta)
    return loss.mean()


def train_estimator(
    model: nn.Module, x: torch.Tensor, targets: torch.Tensor, balance: torch.Tensor,
    sigma_e: float, optim: Optim, seed: int, *, lam: float, eta: float, copies: int, class_weight: ClassWeight,
    device: torch.device | str = "cpu", radius: torch.Tensor | None = None, state_file: Path | None = None,
) -> list[float]:
    """Minimise :func:`estimator_loss` towards ``targets`` (N×K) on m = ``copies`` views x + δ, δ ~ N(0, σ_e²I),
    with per-sample class-balance weights w_e = ``balance`` on the terms ``class_weight`` names and radius
    weights w_r = ``radius`` (1 if None). The paper's λ, η, m and w_e are the defaults of
    :class:`dualrs.settings.EstimatorSettings`."""
    if copies < 1:
        raise ValueError(f"copies must be at least 1, got {copies}")
    radius = torch.ones(len(x)) if radius is None else radius
    torch.manual_seed(seed)

    def loss_fn(inputs: torch.Tensor, target: torch.Tensor, w_e: torch.Tensor, w_r: torch.Tensor) -> torch.Tensor:
        noisy = inputs.unsqueeze(0) + sigma_e * torch.randn((copies, *inputs.shape), device=inputs.device)
        logits = model(noisy.flatten(0, 1)).view(copies, len(inputs), -1)
        return estimator_loss(logits, target, w_e, w_r, lam, eta, class_weight)

    return _fit(model, TensorDataset(x, targets, balance, radius), loss_fn, optim, seed, device, "estimator",
                state_file)


def _fit(
    model, data, loss_fn, optim: Optim, seed: int, device, desc: str, state_file: Path | None = None,
) -> list[float]:
    """Train ``model`` for ``optim.epochs`` epochs of ``loss_fn`` over shuffled batches of ``data``; with
    ``state_file``, resume from the state an interrupted run saved there (:mod:`dualrs.training_state`)."""
    model.to(device).train()
    if optim.grad_checkpointing:
        enable_grad_checkpointing(model)
    device_type = torch.device(device).type
    autocast = TRAIN_PRECISIONS[optim.precision] if device_type == "cuda" else None
    loader_generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(data, batch_size=optim.batch_size, shuffle=True, num_workers=optim.num_workers,
                        generator=loader_generator, drop_last=len(data) > optim.batch_size)
    optimizer, scheduler = optim.build([p for p in model.parameters() if p.requires_grad], len(loader))
    state = None if state_file is None else TrainingState(
        state_file, {"loop": desc, "optim": vars(optim), "seed": seed, "items": len(data)}, model)
    history = [] if state is None else state.restore(model, optimizer, scheduler, loader_generator, len(loader))
    with progress(range(len(history), optim.epochs), desc, total=optim.epochs, initial=len(history)) as epochs:
        for _ in epochs:
            total, seen = 0.0, 0
            for batch in loader:
                batch = [t.to(device) for t in batch]
                size = len(batch[0])
                optimizer.zero_grad(set_to_none=True)
                for chunk in zip(*(t.split(optim.micro_batch_size or size) for t in batch)):
                    with torch.autocast(device_type, dtype=autocast or torch.float32, enabled=autocast is not None):
                        loss = loss_fn(*chunk)
                    if not torch.isfinite(loss):
                        raise NonFiniteError(f"{desc}: the training loss is {loss.item()} in epoch "
                                             f"{len(history) + 1}; training diverged (lower the learning rate) or "
                                             "the inputs hold NaN or inf")
                    (loss * (len(chunk[0]) / size)).backward()
                    total += loss.item() * len(chunk[0])
                optimizer.step()
                scheduler.step()
                seen += size
            history.append(total / seen)
            epochs.set_postfix(loss=f"{history[-1]:.4f}")
            if state is not None:
                state.save_if_due(model, optimizer, loader_generator, history)
    model.eval()
    return history

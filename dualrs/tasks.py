"""One function per pipeline step: read inputs, call the library, write outputs atomically.

The CLI (``dualrs <command>``) parses arguments into these calls; Snakemake rules call the CLI.
"""
from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset, TensorDataset

from dualrs import data as datasets
from dualrs.assembly import (DataSpec, Denoisers, ExpertSpec, denoiser_precision, inference_precision, load_cascade,
                             load_classifier, load_dual, load_estimator, load_router, load_smooth)
from dualrs.fingerprint import path_digest, sample_files_digest
from dualrs.io import metadata_path, read_metadata, save_checkpoint
from dualrs.labels import (adaptive_label, class_balance_weights, hard_labels, informative_rows, label_summary,
                           radius_matrix, radius_weights, soft_labels, training_subset)
from dualrs.models import check_finite_weights, checkpoint_kwargs, create_model
from dualrs.progress import progress
from dualrs.seeding import sample_generator
from dualrs.settings import (CascadeSettings, DualSettings, EstimatorSettings, FinetuneSettings, RouterSettings,
                             RouteSettings, Sampling, SmoothedSettings)
from dualrs.smoothing import Smooth
from dualrs.table_checks import ROUTES_KINDS, read_input_table
from dualrs.tables import (CASCADE_COLUMNS, DUAL_COLUMNS, GLOBAL_COLUMNS, LABEL_COLUMNS, ROUTE_COLUMNS, ROUTER_COLUMNS,
                           file_digest, resumable_table)
from dualrs.train import Optim, train_classifier, train_classifier_at_routed_sigmas, train_estimator
from dualrs.training_state import state_file_for


@dataclass(frozen=True)
class DataRef:
    """A prepared dataset: registry name, folder written by ``prepare-data`` and its options."""

    name: str
    root: Path
    options: Mapping[str, Any] = field(default_factory=dict)

    def info(self) -> datasets.DatasetInfo:
        return datasets.dataset_info(self.name, **self.options)

    def split(self, split: str) -> torch.utils.data.Dataset:
        return datasets.load_split(self.name, self.root, split, **self.options)

    def spec(self) -> DataSpec:
        """What a checkpoint used on this dataset must fit (:mod:`dualrs.assembly`)."""
        info = self.info()
        return DataSpec(self.name, info.num_classes, info.input_shape[0], tuple(info.input_shape[1:]))


def input_meta(info: datasets.DatasetInfo) -> dict[str, Any]:
    """The checkpoint metadata of the inputs a model is made for: channels and (height, width)."""
    return {"in_chans": info.input_shape[0], "input_size": list(info.input_shape[1:])}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def select_indices(num_items: int, every: int, shard: int, num_shards: int) -> list[int]:
    """Every ``every``-th item, dealt round-robin to ``num_shards`` shards; this shard's share."""
    if every < 1 or num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"invalid subset: every={every}, shard={shard}, num_shards={num_shards}")
    return list(range(0, num_items, every))[shard::num_shards]


def prepare_data(data: DataRef, seed: int) -> None:
    """Write the dataset under ``data.root`` and log what was written."""
    datasets.prepare_dataset(data.name, data.root, seed=seed, **data.options)
    sizes = json.loads((Path(data.root) / datasets.READY).read_text())["num_items"]
    splits = ", ".join(f"{split} {count} items" for split, count in sizes.items())
    print(f"prepare-data: wrote {data.name} to {data.root}: {splits}", file=sys.stderr)


def train_denoiser(data: DataRef, out: Path, steps: int, batch_size: int, lr: float, seed: int, device: str) -> None:
    """A DDPM on the training split, its UNet initialised from ``seed`` (:func:`dualrs.denoise.train_ddpm`)."""
    from dualrs.denoise import save_denoiser, train_ddpm

    train = data.split("train")
    images = torch.stack([train[i][0] for i in range(len(train))]).to(resolve_device(device))
    unet, scheduler = train_ddpm(images, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                 state_file=state_file_for(out))
    check_finite_weights(unet, f"the denoiser trained for {out}")
    save_denoiser(unet, scheduler, out)


def train_classifier_model(
    data: DataRef, out: Path, arch: str, model_options: Mapping[str, Any], sigma: float | list[float], optim: Optim,
    seed: int, device: str,
) -> None:
    """A classifier trained under Gaussian noise σ (σ = 0: clean training, for denoised smoothing); given
    several σ, each training input draws its σ uniformly from them (one classifier for every σ of Σ)."""
    info, device = data.info(), resolve_device(device)
    torch.manual_seed(seed)
    model = create_model(arch, info.num_classes, info.input_shape[0], **model_options)
    history = train_classifier(model, data.split("train"), sigma, optim, seed, device,
                               desc=f"classifier sigma={sigma}", state_file=state_file_for(out))
    check_finite_weights(model, f"the classifier trained for {out}")
    save_checkpoint(out, model, {"arch": arch, "num_classes": info.num_classes, **input_meta(info),
                                 "model_kwargs": dict(model_options), "role": "classifier", "sigma": sigma,
                                 "seed": seed, "optim": vars(optim), "loss": history})


def certify_smoothed(
    data: DataRef, split: str, classifier: Path, denoiser: Path | None, out: Path, settings: SmoothedSettings,
    device: str,
) -> None:
    """Standard RS at one σ over a split: on ``train`` the estimator's labels TSV
    (idx label predict count pA_lower radius correct), on ``test`` Cohen's columns.

    ``settings.radius_precision`` (labels only; None: the paper's fixed-n CERTIFY, Sec. 5.1): each label from
    :func:`dualrs.labels.adaptive_label`, see :func:`smoothed_row`."""
    sigma, sampling, radius_precision = settings.sigma, settings.sampling, settings.radius_precision
    if radius_precision is not None and split != "train":
        raise ValueError(f"radius_precision applies to labels (split train), not to split {split!r}")
    device = resolve_device(device)
    smooth = load_smooth(classifier, sigma, denoiser, device, data.spec(), sampling.precision)
    stage, columns = ("label", LABEL_COLUMNS) if split == "train" else ("certify", GLOBAL_COLUMNS)
    dataset = data.split(split)
    certify_split(dataset, sampling, stage, smoothed_row(smooth, sampling, radius_precision), out, columns,
                  device, {"data": data_settings(data, dataset), "classifier": file_digest(classifier), "sigma": sigma,
                           "denoiser": optional_digest(denoiser), "radius_precision": radius_precision})


def smoothed_row(
    smooth: Smooth, sampling: Sampling, radius_precision: float | None = None,
) -> Callable[[torch.Tensor, torch.Generator], dict[str, Any]]:
    """CERTIFY's row for one input: predict count pA_lower radius.

    With ``radius_precision`` the row is :func:`dualrs.labels.adaptive_label`'s (at most n draws, the
    radius settled to within the precision); its ``count`` is then the votes for the guess among the
    draws of the look whose bound is kept, which may be fewer than n, not among n."""

    def row(x: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        if radius_precision is None:
            bound = smooth.certify_bound(x, sampling.n0, sampling.n, sampling.alpha, sampling.batch_size, generator)
        else:
            bound = adaptive_label(smooth, x, sampling.n0, sampling.n, sampling.alpha, radius_precision,
                                   sampling.batch_size, generator)
        return {"predict": bound.prediction, "count": bound.count, "pA_lower": bound.p_lower, "radius": bound.radius}

    return row


def certify_dual(
    data: DataRef, estimator: Path, classifiers: Mapping[float, Path], denoiser: Path | None, out: Path,
    settings: DualSettings, device: str,
) -> None:
    """Dual RS on the test split: idx label predict sigma radius r_sigma r_c correct time.

    ``settings.adaptive``: sequential sampling that stops once the certificate's step on the ``settings.radii``
    grid is settled (DualSmooth.certify)."""
    sampling, beta, adaptive, radii = settings.sampling, settings.beta, settings.adaptive, settings.radii
    device = resolve_device(device)
    dual = load_dual(estimator, classifiers, settings.sigma_e, denoiser, device, data.spec(), sampling.precision)

    def row(x: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        cert = dual.certify(x, sampling.n0, sampling.n, sampling.alpha, beta, sampling.batch_size, generator,
                            adaptive, radii)
        return {"predict": cert.prediction, "sigma": cert.sigma, "radius": cert.radius,
                "r_sigma": cert.r_sigma, "r_c": cert.r_c}

    dataset = data.split("test")
    certify_split(dataset, sampling, "certify-dual", row, out, DUAL_COLUMNS, device,
                  {"data": data_settings(data, dataset), "estimator": file_digest(estimator),
                   "sigma_e": settings.sigma_e, "beta": beta, "denoiser": optional_digest(denoiser),
                   "adaptive": adaptive, "radii": list(radii) if adaptive and radii else None,
                   "classifiers": digests(classifiers)})


def certify_cascade(
    data: DataRef, classifiers: Mapping[float, Path], denoiser: Path | None, out: Path, settings: CascadeSettings,
    device: str,
) -> None:
    """Cascaded smoothing from the largest σ down (Jeong & Shin 2023), as ``settings.variant`` (see
    :mod:`dualrs.cascade`), on the test split: idx label predict sigma radius stage correct time."""
    sampling = settings.sampling
    device = resolve_device(device)
    cascade = load_cascade(classifiers, denoiser, device, data.spec(), settings.threshold, settings.variant,
                           sampling.precision)

    def row(x: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        cert = cascade.certify(x, sampling.n0, sampling.n, sampling.alpha, sampling.batch_size, generator)
        return {"predict": cert.prediction, "sigma": cert.sigma, "radius": cert.radius, "stage": cert.stage}

    dataset = data.split("test")
    certify_split(dataset, sampling, "certify-cascade", row, out, CASCADE_COLUMNS, device,
                  {"data": data_settings(data, dataset), "threshold": settings.threshold, "variant": settings.variant,
                   "denoiser": optional_digest(denoiser), "classifiers": digests(classifiers)})


def certify_router(
    data: DataRef, router: Path, experts: Sequence[ExpertSpec], denoiser: Path | None, out: Path,
    settings: RouterSettings, device: str,
) -> None:
    """Routing among expert RS models on the test split (Sun et al. 2025, Sec. 4.3):
    idx label predict expert sigma radius r_sigma r_c correct time. ``denoiser`` wraps the router."""
    sigma_e, beta, sampling = settings.sigma_e, settings.beta, settings.sampling
    device = resolve_device(device)
    routed = load_router(router, experts, sigma_e, denoiser, device, data.spec(), sampling.precision)

    def row(x: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        cert = routed.certify(x, sampling.n0, sampling.n, sampling.alpha, beta, sampling.batch_size, generator)
        return {"predict": cert.prediction, "expert": cert.expert, "sigma": cert.sigma, "radius": cert.radius,
                "r_sigma": cert.r_sigma, "r_c": cert.r_c}

    dataset = data.split("test")
    certify_split(dataset, sampling, "certify-router", row, out, ROUTER_COLUMNS, device,
                  {"data": data_settings(data, dataset), "router": file_digest(router), "sigma_e": sigma_e,
                   "beta": beta, "denoiser": optional_digest(denoiser),
                   "experts": [{**vars(e), "classifier": file_digest(e.classifier),
                                "denoiser": optional_digest(e.denoiser)} for e in experts]})


def digests(checkpoints: Mapping[float, Path]) -> dict[str, str]:
    """SHA-256 of each σ's checkpoint, for the settings a resumed table must match."""
    return {str(s): file_digest(path) for s, path in sorted(checkpoints.items())}


def optional_digest(path: Path | None) -> str | None:
    """Content digest of a checkpoint file or denoiser directory (weights, configs, conditioning); None for none."""
    return None if path is None else path_digest(path)


def data_settings(data: DataRef, dataset: torch.utils.data.Dataset) -> dict[str, Any]:
    """What certificates depend on in a dataset: registry name, folder and options, the content of the
    prepared folder's files, and path, size and mtime of the files it lists elsewhere (:mod:`dualrs.fingerprint`)."""
    return {**vars(data), "files": path_digest(data.root), "sources": sample_files_digest(dataset)}


class InputLabels(Mapping[int, "int | None"]):
    """idx → label of the inputs one output covers, from :func:`known_labels` (None where they are not known
    without loading the input: a resumed row is then checked for its idx only)."""

    def __init__(self, dataset: torch.utils.data.Dataset, indices: Sequence[int]):
        self.indices, self._members, self._labels = indices, frozenset(indices), known_labels(dataset)

    def __contains__(self, idx: object) -> bool:
        return idx in self._members

    def __getitem__(self, idx: int) -> int | None:
        if idx not in self._members:
            raise KeyError(idx)
        return None if self._labels is None else self._labels[idx]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def known_labels(dataset: torch.utils.data.Dataset) -> list[int] | None:
    """Every item's label where the dataset keeps labels apart from inputs (a labelled TensorDataset,
    ``targets`` as torchvision's CIFAR10, ``samples`` of (path, label) as ImageFolder and dualrs's image
    lists), through any Subset; None otherwise, as reading them would load every input."""
    if isinstance(dataset, Subset):
        labels = known_labels(dataset.dataset)
        return None if labels is None else [labels[i] for i in dataset.indices]
    if isinstance(dataset, TensorDataset):
        labels = dataset.tensors[-1]
        return labels.tolist() if len(dataset.tensors) == 2 and labels.dim() == 1 and not labels.is_floating_point() \
            else None
    if hasattr(dataset, "targets"):
        return [int(label) for label in dataset.targets]
    if hasattr(dataset, "samples"):
        return [int(label) for _, label in dataset.samples]
    return None


def certify_split(
    dataset: torch.utils.data.Dataset, sampling: Sampling, stage: str,
    row_fn: Callable[[torch.Tensor, torch.Generator], dict[str, Any]], out: Path, columns: list[str],
    device: torch.device, settings: Mapping[str, Any] | None = None,
) -> None:
    """Run ``row_fn`` on this shard's samples with per-sample seeded noise, resuming a partial file
    written with the same sampling and ``settings`` (what else the rows depend on) whose rows are rows of
    these inputs; the output is locked for the whole run (:class:`dualrs.tables.ResumableTable`)."""
    indices = select_indices(len(dataset), sampling.every, sampling.shard, sampling.num_shards)
    recorded = {"stage": stage, **asdict(sampling), "precision": inference_precision(sampling.precision, device),
                "denoiser_precision": denoiser_precision(sampling.precision, device), **(settings or {})}
    del recorded["batch_size"]  # certificates do not depend on it
    with resumable_table(out, columns, recorded, InputLabels(dataset, indices)) as table:
        todo = [i for i in indices if i not in table.done]
        for i in progress(todo, f"{stage} {Path(out).name}", len(indices), initial=len(indices) - len(todo)):
            x, y = dataset[i]
            start = time.perf_counter()
            row = row_fn(x, sample_generator(sampling.seed, stage, i, device))
            row.update(idx=i, label=int(y), correct=int(row["predict"] == int(y)),
                       time=time.perf_counter() - start)
            table.append(row)


def train_estimator_model(
    data: DataRef, labels: Mapping[float, Path] | Mapping[str, Path], denoiser: Path | None, out: Path,
    settings: EstimatorSettings, device: str,
) -> None:
    """Variance estimator over the candidate σ's from the per-σ label tables (Sun et al. 2025, Sec. 5.1), or
    a router over experts when ``labels`` is keyed by expert name (class order = key order, each expert's σ in
    ``settings.expert_sigmas``, needed by a radius weight); trained on a seeded ``train_fraction`` of the labelled
    inputs less those certified under no candidate, towards softmax(radii / ``temperature``) (None: plain
    softmax) or ``hard`` labels, with loss weights w_e (class balance, on the terms ``class_weight`` names) and
    w_r (``radius_weight``)."""
    s, info, device = settings, data.info(), resolve_device(device)
    routes_experts = any(isinstance(key, str) for key in labels)
    train = data.split("train")
    idx, radii, candidates = radius_matrix(labels if routes_experts else dict(sorted(labels.items())), len(train))
    sigmas = _candidate_sigmas(candidates, s.expert_sigmas) if routes_experts else candidates
    if s.radius_weight != "none" and sigmas is None:
        raise ValueError(f"radius weight {s.radius_weight!r} needs the sigma of every expert")
    keep = training_subset(len(idx), s.train_fraction, s.seed)
    informative = informative_rows(radii[keep])
    dropped = int((~informative).sum())
    print(f"dropped {dropped} of {len(keep)} training samples certified under no candidate")
    if not informative.any():
        raise ValueError(f"none of the {len(keep)} labelled training inputs is certified under any candidate, so "
                         "the estimator has nothing to learn from: with label.n draws the largest lower bound is "
                         "alpha^(1/n), which must exceed 1/2 (n > log(alpha) / log(1/2)), and the classifiers "
                         "must be right on some training inputs")
    idx, radii = idx[keep][informative], radii[keep][informative]
    x = torch.stack([train[int(i)][0] for i in idx])
    targets = torch.as_tensor(hard_labels(radii) if s.hard else soft_labels(radii, s.temperature),
                              dtype=torch.float32)
    balance = torch.as_tensor(class_balance_weights(radii), dtype=torch.float32)
    w_r = np.ones(len(radii)) if s.radius_weight == "none" else radius_weights(radii, sigmas, s.radius_weight)
    print(label_summary(radii, candidates).to_string(index=False))
    torch.manual_seed(s.seed)
    init = {"weights": str(s.init_weights), "reinit_head": True} if s.init_weights is not None else {}
    estimator = create_model(s.arch, len(candidates), info.input_shape[0], **s.model_options, **init)
    model = Denoisers(denoiser, device).wrap(estimator, s.sigma_e)
    history = train_estimator(model, x, targets, balance, s.sigma_e, s.optim, s.seed, lam=s.lam, eta=s.eta,
                              copies=s.copies, class_weight=s.class_weight, device=device,
                              radius=torch.as_tensor(w_r, dtype=torch.float32), state_file=state_file_for(out))
    check_finite_weights(estimator, f"the estimator trained for {out}")
    save_checkpoint(out, estimator, {"arch": s.arch, "num_classes": len(candidates), **input_meta(info),
                                     "model_kwargs": dict(s.model_options), "role": "estimator",
                                     "experts" if routes_experts else "sigmas": candidates,
                                     **({"expert_sigmas": sigmas} if routes_experts and sigmas is not None else {}),
                                     "sigma_e": s.sigma_e, "temperature": s.temperature, "lambda": s.lam,
                                     "eta": s.eta, "copies": s.copies, "labels": "hard" if s.hard else "soft",
                                     "radius_weight": s.radius_weight, "class_balance": "inverse_share",
                                     "class_weight": s.class_weight,
                                     "train_fraction": s.train_fraction, "train_samples": len(idx),
                                     "dropped_uncertified": dropped, "seed": s.seed,
                                     "optim": vars(s.optim), "loss": history})


def _candidate_sigmas(experts: Sequence[str], expert_sigmas: Mapping[str, float] | None) -> list[float] | None:
    """The σ of each expert in class order; None without ``expert_sigmas``."""
    if expert_sigmas is None:
        return None
    if set(expert_sigmas) != set(experts):
        raise ValueError(f"expert sigmas {sorted(expert_sigmas)} do not name the experts {sorted(experts)}")
    return [float(expert_sigmas[name]) for name in experts]


def route_training_set(
    data: DataRef, estimator: Path, denoiser: Path | None, out: Path, settings: RouteSettings, device: str,
) -> None:
    """σ̂ of every training input by the estimator's (in ``settings.precision``) majority vote of n draws under
    noise σ_e (Sun et al. 2025, Sec. 5.2), noise seeded per input: routes TSV (idx sigma), resumable as the
    certificate tables are (:func:`~dualrs.tables.resumable_table`)."""
    s, device = settings, resolve_device(device)
    sigmas = read_metadata(metadata_path(estimator))["sigmas"]
    model = load_estimator(estimator, sigmas, device, data.spec())
    smooth = Smooth(Denoisers(denoiser, device, s.precision).wrap(model, s.sigma_e), len(sigmas), s.sigma_e,
                    name="the variance estimator")
    train = data.split("train")
    recorded = {"stage": "route", "sigma_e": s.sigma_e, "n": s.n, "seed": s.seed, "data": data_settings(data, train),
                "estimator": file_digest(estimator), "denoiser": optional_digest(denoiser),
                "precision": inference_precision(s.precision, device),
                "denoiser_precision": denoiser_precision(s.precision, device)}
    with resumable_table(out, ROUTE_COLUMNS, recorded, dict.fromkeys(range(len(train)))) as table:
        todo = [i for i in range(len(train)) if i not in table.done]
        for i in progress(todo, f"route {out.name}", len(train), initial=len(train) - len(todo)):
            counts = smooth.sample_counts(train[i][0], s.n, s.batch_size, sample_generator(s.seed, "route", i, device))
            table.append({"idx": i, "sigma": sigmas[int(counts.argmax())]})


def finetune_classifier(
    data: DataRef, classifier: Path, routes: Path, denoiser: Path | None, out: Path, settings: FinetuneSettings,
    device: str,
) -> None:
    """Finetune under the estimated variances (Sun et al. 2025, Sec. 5.2): the expert for ``settings.sigma`` on
    the training inputs routed to it, under noise σ; with ``sigma`` None, the one shared classifier on every
    training input at its routed σ (through that σ's denoiser, for denoised smoothing)."""
    sigma, optim, seed = settings.sigma, settings.optim, settings.seed
    train = data.split("train")
    table = read_input_table(routes, "the routes table", ROUTES_KINDS, num_items=len(train), split="training split")
    if sigma is not None and not np.isclose(table["sigma"], sigma).any():
        routed = ", ".join(f"{s:g}" for s in np.unique(table["sigma"])) or "none"
        warnings.warn(f"no training input of {routes} is routed to sigma={sigma:g} (sigmas routed to: {routed}); "
                      "the classifier is saved unchanged")
    device = resolve_device(device)
    model, meta = load_classifier(classifier, device, data.spec())
    denoisers = Denoisers(denoiser, device)
    if sigma is None:
        views = {float(s): denoisers.wrap(model, float(s)) for s in np.unique(table["sigma"])}
        subset = Subset(train, table["idx"].astype(int).tolist())
        history = train_classifier_at_routed_sigmas(views, subset, table["sigma"].tolist(), optim, seed, device,
                                                    desc="finetune at routed sigmas", state_file=state_file_for(out))
        samples = {f"{s:g}": int(np.isclose(table["sigma"], s).sum()) for s in views}
    else:
        chosen = table.loc[np.isclose(table["sigma"], sigma), "idx"].astype(int).tolist()
        history = []
        if chosen:
            history = train_classifier(denoisers.wrap(model, sigma), Subset(train, chosen), sigma,
                                       optim, seed, device, desc=f"finetune sigma={sigma}",
                                       state_file=state_file_for(out))
        samples = {f"{sigma:g}": len(chosen)}
    check_finite_weights(model, f"the classifier finetuned for {out}")
    save_checkpoint(out, model, {**meta, "sigma": sigma, "finetuned_from": str(classifier),
                                 "finetune_samples": samples, "finetune_optim": vars(optim),
                                 "finetune_loss": history})


def fetch_pretrained(data: DataRef, arch: str, model_options: Mapping[str, Any], weights: Path, out: Path) -> None:
    """Off-the-shelf classifier weights (a timm checkpoint file or, for ``hf/`` architectures, a Hugging Face
    model folder) as a dualrs checkpoint (one model for every σ); its head must give the dataset's classes."""
    info = data.info()
    model = create_model(arch, info.num_classes, info.input_shape[0], weights=str(weights), **model_options)
    save_checkpoint(out, model, {"arch": arch, "num_classes": info.num_classes, **input_meta(info),
                                 "model_kwargs": {**model_options, **checkpoint_kwargs(model)},
                                 "role": "classifier", "source": str(weights)})



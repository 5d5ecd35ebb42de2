"""``dualrs <command>``: one command per pipeline step (see ``dualrs --help``).

Arguments are validated before any work starts (the Monte Carlo settings by
:func:`dualrs.validation.check_settings`, as in the library); each command calls one function of
:mod:`dualrs.tasks`.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, TypeVar
from pathlib import Path

from dualrs import gpu_slots, runlog
from dualrs.host_memory import keep_freed_memory
from dualrs.settings import (CascadeSettings, DualSettings, EstimatorSettings, FinetuneSettings, RouterSettings,
                             RouteSettings, Sampling, SmoothedSettings, default)
from dualrs.tables import OutputError, concat_tables
from dualrs.validation import check_output_path, check_settings

K = TypeVar("K", float, str)
N = TypeVar("N", int, float)
#: Names of :data:`dualrs.convert.PRESETS` (listed here so that the parser does not import torch).
DENOISER_PRESETS = ("256x256_diffusion_uncond", "cifar10_uncond_50M_500K")

if TYPE_CHECKING:
    from dualrs import tasks
    from dualrs.train import Optim


def parsed(text: str, convert: Callable[[str], N], expected: str, accept: Callable[[N], bool] = lambda _: True) -> N:
    """``convert(text)`` if it converts and is accepted, else the argument error saying what was expected (not
    Python's ``int()`` message)."""
    try:
        value = convert(text)
    except ValueError:
        value = None
    if value is None or not accept(value):
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
    return value


def number(text: str) -> float:
    return parsed(text, float, "a number")


def positive_float(text: str) -> float:
    return parsed(text, float, "a positive number", lambda value: value > 0 and math.isfinite(value))


def nonnegative_float(text: str) -> float:
    return parsed(text, float, "a non-negative number", lambda value: value >= 0 and math.isfinite(value))


MAX_SEED = 2**32 - 1  # NumPy's seeds, as the config's `seed`


def seed_value(text: str) -> int:
    return parsed(text, int, "an integer in [0, 2^32 - 1]", lambda value: 0 <= value <= MAX_SEED)


def nonnegative_int(text: str) -> int:
    return parsed(text, int, "an integer >= 0", lambda value: value >= 0)


def positive_int(text: str) -> int:
    return parsed(text, int, "a positive integer", lambda value: value >= 1)


def setting(name: str) -> Callable[[str], float | int]:
    """The argument type of the Monte Carlo setting ``name`` (a keyword of :func:`check_settings`)."""
    count = name in ("n0", "n", "batch_size")

    def parse(text: str) -> float | int:
        value = parsed(text, int, "a positive integer, in digits (10000, not 1e4)") if count else number(text)
        try:
            check_settings(**{name: value})
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return value

    parse.__name__ = name
    return parse


level, beta_level, noise_level, draws = setting("alpha"), setting("beta"), setting("sigma"), setting("n")


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {text!r}")
    return value


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}")
    return value


def sigma_path(text: str) -> tuple[float, Path]:
    """``SIGMA=PATH``."""
    sigma, sep, path = text.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"expected SIGMA=PATH, got {text!r}")
    return noise_level(sigma), Path(path)


def name_path(text: str) -> tuple[str, Path]:
    """``NAME=PATH``."""
    name, sep, path = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def name_sigma(text: str) -> tuple[str, float]:
    """``NAME=SIGMA``."""
    name, sep, sigma = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=SIGMA, got {text!r}")
    return name, noise_level(sigma)


def expert_spec(text: str) -> dict:
    """``{"name": ..., "sigma": ..., "classifier": CHECKPOINT, "denoiser": DIR or null}``."""
    spec = json_object(text)
    unknown = set(spec) - {"name", "sigma", "classifier", "denoiser"}
    if unknown or not {"name", "sigma", "classifier"} <= set(spec):
        raise argparse.ArgumentTypeError(
            f"an expert needs name, sigma, classifier (and optionally denoiser), got {text!r}")
    denoiser = spec.get("denoiser")
    return {"name": str(spec["name"]), "sigma": noise_level(str(spec["sigma"])),
            "classifier": existing_file(spec["classifier"]), "denoiser": existing_dir(denoiser) if denoiser else None}


def json_object_or_file(text: str) -> dict:
    """A JSON object, inline or in the file ``text`` names."""
    path = Path(text)
    return json_object(path.read_text() if path.is_file() else text)


def existing_file(text: str) -> Path:
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"file not found: {text}")
    return path


def existing_path(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"file or directory not found: {text}")
    return path


def existing_dir(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"directory not found: {text}")
    return path


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows each optional flag's default (required flags and None defaults have none to show)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dualrs", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {runlog.package_version('dualrs')}")
    commands = parser.add_subparsers(dest="command", required=True,
                                     parser_class=partial(argparse.ArgumentParser, formatter_class=HelpFormatter))

    def command(name: str, help: str, *, data: bool = True, sampling: bool = False, optim: bool = False,
                denoiser: bool = False) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--seed", type=seed_value, default=0, help="random seed, in [0, 2^32 - 1]")
        sub.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
        sub.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
        if data:
            sub.add_argument("--dataset", required=True, help="registry name: digits, cifar10, imagenet, an installed plugin's")
            sub.add_argument("--root", type=Path, required=True, help="folder written by prepare-data")
            sub.add_argument("--data-options", type=json_object, default={}, help="JSON object")
        if sampling:
            sub.add_argument("--n0", type=setting("n0"), required=True, help="noise draws to select the top class")
            sub.add_argument("--n", type=draws, required=True, help="noise draws to bound its probability")
            sub.add_argument("--batch-size", type=setting("batch_size"), required=True,
                             help="noisy copies per forward pass")
            sub.add_argument("--every", type=positive_int, default=default(Sampling, "every"),
                             help="certify every k-th sample")
            sub.add_argument("--shard", type=nonnegative_int, default=default(Sampling, "shard"), help="this shard's index")
            sub.add_argument("--num-shards", type=positive_int, default=default(Sampling, "num_shards"),
                             help="number of shards")
            sub.add_argument("--precision", choices=("bf16", "fp32"), default=default(Sampling, "precision"),
                             help="bf16: on CUDA the models under bfloat16 autocast, on a CPU with oneDNN bf16 kernels "
                                  "the denoiser's UNet (classifiers stay fp32 on CPU)")
        if optim:
            sub.add_argument("--epochs", type=positive_int, required=True, help="training epochs")
            sub.add_argument("--batch-size" if not sampling else "--train-batch-size", dest="train_batch_size",
                             type=setting("batch_size"), required=True, help="training batch size")
            sub.add_argument("--lr", type=positive_float, required=True, help="initial learning rate")
            sub.add_argument("--weight-decay", type=nonnegative_float, default=0.0, help="weight decay")
            sub.add_argument("--num-workers", type=nonnegative_int, default=0, help="DataLoader worker processes")
            sub.add_argument("--optimizer", choices=("adam", "adamw"), default="adam",
                             help="adamw: decoupled weight decay")
            sub.add_argument("--milestones", type=positive_int, nargs="*", default=[],
                             help="epochs at which the learning rate is multiplied by --gamma (default: cosine decay)")
            sub.add_argument("--gamma", type=positive_float, default=0.5, help="learning-rate factor at each milestone")
            sub.add_argument("--micro-batch-size", type=positive_int, default=None,
                             help="accumulate gradients over micro-batches of this size (default: the whole batch)")
            sub.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                             help="training arithmetic on CUDA: bf16 = bfloat16 autocast (CPU: always fp32)")
            sub.add_argument("--grad-checkpointing", action="store_true",
                             help="recompute activations in backward to save GPU memory (timm models)")
        if denoiser:
            sub.add_argument("--denoiser", type=existing_dir, default=None,
                             help="diffusers UNet directory: denoised smoothing when given")
        return sub

    sub = command("prepare-data", "write the dataset's stable on-disk form under --root")
    sub.set_defaults(run=lambda a: _tasks().prepare_data(_data(a), a.seed))

    sub = command("train-denoiser", "train a small DDPM on the training split (Ho et al. 2020)")
    sub.add_argument("--steps", type=positive_int, required=True, help="training steps")
    sub.add_argument("--batch-size", type=setting("batch_size"), required=True, help="images per step")
    sub.add_argument("--lr", type=positive_float, required=True, help="AdamW learning rate")
    sub.add_argument("--out", type=Path, required=True, help="denoiser directory to write")
    sub.set_defaults(run=lambda a: _tasks().train_denoiser(
        _data(a), a.out, a.steps, a.batch_size, a.lr, a.seed, a.device))

    sub = command("train-classifier", "train a classifier under Gaussian noise σ", optim=True)
    sub.add_argument("--arch", required=True, help="model architecture (dualrs.models)")
    sub.add_argument("--model-options", type=json_object, default={}, help="JSON object of architecture options")
    sub.add_argument("--sigma", type=nonnegative_float, nargs="+", required=True,
                     help="training noise (0: clean); several: each input draws one of them uniformly")
    sub.add_argument("--out", type=Path, required=True, help="file to write")
    sub.set_defaults(run=lambda a: _tasks().train_classifier_model(
        _data(a), a.out, a.arch, a.model_options, a.sigma[0] if len(a.sigma) == 1 else a.sigma, _optim(a), a.seed,
        a.device))

    for name, split, help in (("label", "train", "certify training samples under one σ (estimator labels)"),
                              ("certify-global", "test", "standard RS at one global σ on the test split (Cohen et al. 2019): "
                               "certifies any dualrs classifier checkpoint")):
        sub = command(name, help, sampling=True, denoiser=True)
        sub.add_argument("--classifier", type=existing_file, required=True, help="classifier checkpoint")
        sub.add_argument("--sigma", type=noise_level, required=True, help="noise level sigma")
        sub.add_argument("--alpha", type=level, required=True, help="failure probability of the classifier's bound")
        if name == "label":
            sub.add_argument("--radius-precision", type=positive_float, metavar="R",
                             default=default(SmoothedSettings, "radius_precision"),
                             help="sequential sampling: stop once the label radius is settled to within this "
                                  "precision, drawing at most --n (default: none, fixed-n CERTIFY as in the paper)")
        sub.add_argument("--out", type=Path, required=True, help="file to write")
        sub.set_defaults(run=lambda a, split=split: _tasks().certify_smoothed(
            _data(a), split, a.classifier, a.denoiser, a.out, _smoothed(a), a.device))

    sub = command("certify-dual", "dual RS on the test split (Theorem 4.2)", sampling=True, denoiser=True)
    sub.add_argument("--estimator", type=existing_file, required=True, help="estimator checkpoint")
    sub.add_argument("--classifier", type=sigma_path, action="append", required=True, help="SIGMA=CHECKPOINT")
    sub.add_argument("--sigma-e", type=setting("sigma_e"), required=True, help="noise level sigma_e of the estimator")
    sub.add_argument("--alpha", type=level, required=True, help="failure probability of the classifier's bound")
    sub.add_argument("--beta", type=beta_level, required=True, help="failure probability of the estimator's bound")
    sub.add_argument("--adaptive", action="store_true",
                     help="sequential sampling: stop once the certificate is settled (same guarantee)")
    sub.add_argument("--radii", type=nonnegative_float, nargs="+", default=default(DualSettings, "radii"),
                     help="with --adaptive: the table's radius grid, whose step each certificate settles "
                          "(default: multiples of 0.25)")
    sub.add_argument("--out", type=Path, required=True, help="file to write")
    sub.set_defaults(run=lambda a: _tasks().certify_dual(
        _data(a), a.estimator, _unique(a.classifier, "sigma"), a.denoiser, a.out,
        DualSettings(a.sigma_e, a.beta, _sampling(a), a.adaptive, None if a.radii is None else tuple(a.radii)),
        a.device))

    sub = command("certify-cascade", "cascaded RS from the largest sigma down (Jeong & Shin 2023)", sampling=True,
                  denoiser=True)
    sub.add_argument("--classifier", type=sigma_path, action="append", required=True, help="SIGMA=CHECKPOINT")
    sub.add_argument("--alpha", type=level, required=True,
                     help="published: stage k (from 0) spends alpha/(k+1); union_bound: split evenly over the stages")
    sub.add_argument("--threshold", type=number, default=default(CascadeSettings, "threshold"),
                     help="p0: a stage is confident when p_A >= p0")
    sub.add_argument("--variant", choices=["published", "union_bound"], default=default(CascadeSettings, "variant"),
                     help="published: Jeong & Shin's procedure (certify.py of their code; levels alpha/(k+1), "
                          "Goodman bounds, undecided only on the guess; no guarantee at level alpha); "
                          "union_bound: every bound at an even share of alpha, valid at level alpha")
    sub.add_argument("--out", type=Path, required=True, help="file to write")
    sub.set_defaults(run=lambda a: _tasks().certify_cascade(
        _data(a), _unique(a.classifier, "sigma"), a.denoiser, a.out,
        CascadeSettings(_sampling(a), a.threshold, a.variant), a.device))

    sub = command("certify-router", "route among expert RS models on the test split (Sec. 4.3)", sampling=True,
                  denoiser=True)
    sub.add_argument("--router", type=existing_file, required=True, help="estimator checkpoint over the experts")
    sub.add_argument("--expert", type=expert_spec, action="append", required=True,
                     help='JSON {"name", "sigma", "classifier", "denoiser"}, in the router\'s class order')
    sub.add_argument("--sigma-e", type=setting("sigma_e"), required=True, help="noise level sigma_e of the estimator")
    sub.add_argument("--alpha", type=level, required=True, help="failure probability of the classifier's bound")
    sub.add_argument("--beta", type=beta_level, required=True, help="failure probability of the estimator's bound")
    sub.add_argument("--out", type=Path, required=True, help="file to write")
    sub.set_defaults(run=lambda a: _tasks().certify_router(
        _data(a), a.router, [_tasks().ExpertSpec(**spec) for spec in a.expert], a.denoiser, a.out,
        RouterSettings(a.sigma_e, a.beta, _sampling(a)), a.device))

    sub = command("train-estimator", "train the variance estimator (or a router) from label tables", optim=True,
                  denoiser=True)
    candidates = sub.add_mutually_exclusive_group(required=True)
    candidates.add_argument("--labels", type=sigma_path, action="append", help="SIGMA=TSV, one per σ")
    candidates.add_argument("--expert-labels", type=name_path, action="append",
                            help="NAME=TSV, one per expert in class order: train a router")
    sub.add_argument("--arch", required=True, help="model architecture (dualrs.models)")
    sub.add_argument("--model-options", type=json_object, default=default(EstimatorSettings, "model_options"),
                     help="JSON object of architecture options")
    sub.add_argument("--sigma-e", type=setting("sigma_e"), required=True, help="noise level sigma_e of the estimator")
    sub.add_argument("--temperature", type=positive_float, default=default(EstimatorSettings, "temperature"),
                     help="targets softmax(radii/temperature); default: the plain softmax of the radii (Sec. 5)")
    sub.add_argument("--radius-weight", choices=["strong", "weak", "none"],
                     default=default(EstimatorSettings, "radius_weight"),
                     help="weight w_r of the consistency term: the radius under the largest (strong) or smallest "
                          "(weak) candidate sigma, or 1 (none); see dualrs.labels.radius_weights")
    sub.add_argument("--class-weight", choices=["both", "ce", "none"],
                     default=default(EstimatorSettings, "class_weight"),
                     help="where the class-balance weight w_e applies: the soft CE and the consistency term "
                          "(both, the paper's loss, Sec. 5.1), the soft CE only (ce), or nowhere (none)")
    sub.add_argument("--expert-sigma", type=name_sigma, action="append",
                     help="NAME=SIGMA, the noise level of each expert of --expert-labels (needed by a radius weight)")
    sub.add_argument("--lam", type=nonnegative_float, default=default(EstimatorSettings, "lam"),
                     help="consistency weight lambda")
    sub.add_argument("--eta", type=nonnegative_float, default=default(EstimatorSettings, "eta"),
                     help="entropy weight eta")
    sub.add_argument("--copies", type=positive_int, default=default(EstimatorSettings, "copies"),
                     help="noisy copies per input")
    sub.add_argument("--weights", type=existing_file, default=default(EstimatorSettings, "init_weights"),
                     help="timm checkpoint initialising the backbone")
    sub.add_argument("--hard-labels", action="store_true",
                     help="train towards the one-hot argmax of the radii instead of softmax(radii/temperature)")
    sub.add_argument("--train-fraction", type=fraction, default=default(EstimatorSettings, "train_fraction"),
                     help="train on this seeded fraction of the labelled inputs")
    sub.add_argument("--out", type=Path, required=True, help="file to write")
    sub.set_defaults(run=_train_estimator)

    sub = command("route", "route every training input to the estimator's majority-vote sigma", denoiser=True)
    sub.add_argument("--estimator", type=existing_file, required=True, help="estimator checkpoint")
    sub.add_argument("--sigma-e", type=setting("sigma_e"), required=True, help="noise level sigma_e of the estimator")
    sub.add_argument("--n", type=draws, required=True, help="noise draws per vote")
    sub.add_argument("--batch-size", type=setting("batch_size"), required=True, help="noisy copies per forward pass")
    sub.add_argument("--precision", choices=("bf16", "fp32"), default=default(RouteSettings, "precision"),
                     help="bf16: on CUDA the estimator under bfloat16 autocast, on a CPU with oneDNN bf16 kernels "
                          "the denoiser's UNet (the estimator stays fp32 on CPU)")
    sub.add_argument("--out", type=Path, required=True, help="file to write")
    sub.set_defaults(run=lambda a: _tasks().route_training_set(
        _data(a), a.estimator, a.denoiser, a.out, RouteSettings(a.sigma_e, a.n, a.batch_size, a.seed, a.precision),
        a.device))

    sub = command("finetune", "finetune the classifier for one sigma on the inputs routed to it (or, without "
                  "--sigma, one shared classifier on every input at its routed sigma)", optim=True, denoiser=True)
    sub.add_argument("--classifier", type=existing_file, required=True, help="classifier checkpoint")
    sub.add_argument("--sigma", type=noise_level, default=default(FinetuneSettings, "sigma"), help="the expert's sigma")
    sub.add_argument("--routes", type=existing_file, required=True, help="TSV written by `dualrs route`")
    sub.add_argument("--out", type=Path, required=True, help="file to write")
    sub.set_defaults(run=lambda a: _tasks().finetune_classifier(
        _data(a), a.classifier, a.routes, a.denoiser, a.out, FinetuneSettings(_optim(a), a.seed, a.sigma), a.device))

    sub = command("fetch-pretrained", "store off-the-shelf classifier weights as a dualrs checkpoint")
    sub.add_argument("--arch", required=True, help="model architecture (dualrs.models): timm/<name> or hf/<class>")
    sub.add_argument("--model-options", type=json_object, default={}, help="JSON object of architecture options")
    sub.add_argument("--weights", type=existing_path, required=True,
                     help="timm checkpoint file, or Hugging Face model folder for hf/<class>")
    sub.add_argument("--out", type=Path, required=True, help="file to write")
    sub.set_defaults(run=lambda a: _tasks().fetch_pretrained(_data(a), a.arch, a.model_options, a.weights, a.out))

    sub = command("merge", "concatenate shard tables sorted by idx", data=False)
    sub.add_argument("inputs", type=existing_file, nargs="+", help="shard TSVs")
    sub.add_argument("--out", type=Path, required=True, help="file to write")
    sub.set_defaults(run=lambda a: concat_tables(a.inputs, a.out))

    sub = command("report", "certified-accuracy table and figures", data=False)
    sub.add_argument("--global", dest="global_tables", type=sigma_path, action="append", default=[],
                     help="SIGMA=TSV")
    sub.add_argument("--method", type=name_path, action="append", default=[],
                     help="NAME=TSV: another row (cascade, an expert alone)")
    sub.add_argument("--dual", type=name_path, action="append", default=[],
                     help="NAME=TSV: a routed row (dual RS, router) with the sigma chosen per input")
    sub.add_argument("--radii", type=nonnegative_float, nargs="+", required=True, help="radii of the table's columns")
    sub.add_argument("--sigmas", type=noise_level, nargs="+", default=[],
                     help="the candidate set: columns of _choices.csv whether chosen or not (the --global sigmas are)")
    sub.add_argument("--title", default="", help="figure title")
    sub.add_argument("--table", type=Path, required=True,
                     help="CSV path; .md, .tex, .json, _curve.csv, _choices.csv/.md and (with --global) "
                          "_headroom.csv/.md written beside it")
    sub.add_argument("--figures", type=Path, default=None, help="figure folder (none: no figures)")
    sub.add_argument("--published", metavar="EXPERIMENT", default=None,
                     help="compare with the paper's numbers for EXPERIMENT (dualrs/published_numbers.yaml): "
                          "_vs_paper.csv/.md beside the table and, with --figures, vs_paper.png/.pdf")
    sub.add_argument("--choices-reference", type=existing_file, default=None, metavar="TSV",
                     help="a routed certificate TSV: each --dual row gets the share of inputs whose choice (sigma "
                          "or expert) is this one's and the mean per-input change of certified radius")
    sub.set_defaults(run=lambda a: _report_experiment(
        _unique(a.global_tables, "sigma"), _unique(a.method, "row name"), _unique(a.dual, "row name"), a.radii,
        a.table, a.figures, a.title, a.published, a.choices_reference, a.sigmas))
    sub = commands.add_parser(
        "convert-denoiser", help="convert an improved-/guided-diffusion checkpoint to a denoiser directory",
        description="Write an openai improved-diffusion or guided-diffusion checkpoint (a torch.save'd state "
                    "dict) as a directory that --denoiser loads: diffusers UNet2DModel, DDPM scheduler and the "
                    "timestep conditioning (t*1000/T for rescale_timesteps).")
    sub.add_argument("--checkpoint", type=existing_file, required=True,
                     help="original .pt state dict, e.g. cifar10_uncond_50M_500K.pt")
    flags = sub.add_mutually_exclusive_group(required=True)
    flags.add_argument("--preset", choices=DENOISER_PRESETS,
                       help="flags of the published checkpoint of this name (dualrs.convert.PRESETS)")
    flags.add_argument("--flags", type=json_object_or_file,
                       help="the original scripts' flags as a JSON object or a .json file (image_size, "
                            "num_channels, num_res_blocks, attention_resolutions, diffusion_steps, noise_schedule, "
                            "rescale_timesteps, learn_sigma, ...)")
    sub.add_argument("--out", type=Path, required=True, help="denoiser directory to write (replaced atomically)")
    sub.set_defaults(run=_convert_denoiser)
    return parser


def _unique(pairs: Sequence[tuple[K, Path]], what: str) -> dict[K, Path]:
    """``KEY=PATH`` pairs as a mapping; a key given twice is an error naming ``what`` it is."""
    mapping = dict(pairs)
    if len(mapping) != len(pairs):
        raise SystemExit(f"dualrs: error: a {what} is given twice in {[f'{k}={p}' for k, p in pairs]}")
    return mapping


def _train_estimator(a: argparse.Namespace) -> None:
    """``train-estimator``: σ labels, or expert labels with their σ's when a radius weight needs them."""
    if a.labels and a.expert_sigma:
        raise SystemExit("dualrs: error: --expert-sigma goes with --expert-labels")
    if a.expert_labels and not a.expert_sigma and a.radius_weight != "none":
        raise SystemExit(f"dualrs: error: --radius-weight {a.radius_weight} needs --expert-sigma NAME=SIGMA for "
                         "every expert (or --radius-weight none)")
    labels = _unique(a.labels, "sigma") if a.labels else _unique(a.expert_labels, "expert")
    if len(labels) < 2:
        flag, what = ("--labels", "sigmas") if a.labels else ("--expert-labels", "experts")
        raise SystemExit(f"dualrs: error: {flag} given once; the estimator chooses among at least two {what}, "
                         "one label table each")
    expert_sigmas = dict(a.expert_sigma) if a.expert_sigma else None
    if expert_sigmas is not None and set(expert_sigmas) != set(labels):
        raise SystemExit(f"dualrs: error: --expert-sigma names {sorted(expert_sigmas)}, but the experts are "
                         f"{sorted(labels)}")
    settings = EstimatorSettings(
        a.arch, a.sigma_e, _optim(a), a.seed, model_options=a.model_options, init_weights=a.weights,
        temperature=a.temperature, hard=a.hard_labels, lam=a.lam, eta=a.eta, copies=a.copies,
        radius_weight=a.radius_weight, class_weight=a.class_weight, train_fraction=a.train_fraction,
        expert_sigmas=expert_sigmas)
    _tasks().train_estimator_model(_data(a), labels, a.denoiser, a.out, settings, a.device)


def _tasks():
    """:mod:`dualrs.tasks`, imported when a command runs: it loads torch, which merge and report do not need."""
    from dualrs import tasks

    return tasks


def _convert_denoiser(a: argparse.Namespace) -> None:
    from dualrs.convert import PRESETS, convert_openai_checkpoint

    convert_openai_checkpoint(a.checkpoint, PRESETS[a.preset] if a.preset else a.flags, a.out)


def _report_experiment(*args) -> None:
    from dualrs.report import report_experiment

    report_experiment(*args)


def _data(a: argparse.Namespace) -> tasks.DataRef:
    return _tasks().DataRef(a.dataset, a.root, a.data_options)


def _sampling(a: argparse.Namespace) -> Sampling:
    if not 0 <= a.shard < a.num_shards:
        raise SystemExit(f"dualrs: error: --shard must lie in [0, {a.num_shards}), got {a.shard}")
    return Sampling(a.n0, a.n, a.alpha, a.batch_size, a.seed, a.every, a.shard, a.num_shards, a.precision)


def _smoothed(a: argparse.Namespace) -> SmoothedSettings:
    """``label`` and ``certify-global``: σ, sampling and, for labels only, the radius precision."""
    sequential = {"radius_precision": a.radius_precision} if "radius_precision" in a else {}
    return SmoothedSettings(a.sigma, _sampling(a), **sequential)


def _optim(a: argparse.Namespace) -> Optim:
    from dualrs.train import Optim

    return Optim(a.epochs, a.train_batch_size, a.lr, a.weight_decay, a.num_workers, a.optimizer,
                 tuple(a.milestones), a.gamma, a.micro_batch_size, a.precision, a.grad_checkpointing)


# Commands that never run a model on ``--device``; every other one, with ``--device`` auto or cuda,
# claims a free GPU before CUDA initialises (dualrs.gpu_slots).
HOST_COMMANDS = frozenset({"prepare-data", "fetch-pretrained", "merge", "report", "convert-denoiser"})


# Argument types that read an input: the header of a command's log gives each one's SHA-256.
INPUT_TYPES = (existing_file, existing_dir, sigma_path, name_path, expert_spec)


# Commands given a σ selector: its flag, what it must be, the metadata key that says so (and that key in
# words), and the other kind's key, named in the error.
SELECTOR_ARGUMENTS = {
    "route": ("--estimator", "a variance estimator", "sigmas", "candidate sigmas", "experts"),
    "certify-dual": ("--estimator", "a variance estimator", "sigmas", "candidate sigmas", "experts"),
    "certify-router": ("--router", "a router", "experts", "experts", "sigmas"),
}


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Rules across arguments and what the named files say they are, checked before any work: α + β < ½
    (:func:`check_settings`), a device torch knows, classifiers that are not estimators, an estimator
    (over sigmas) where ``route`` and ``certify-dual`` need one and a router (over experts) where
    ``certify-router`` does, and a --sigma-e (an expert's sigma) that is the one the estimator's (router's)
    metadata records."""
    import torch

    from dualrs.config_checks import weights_refused

    try:
        check_settings(alpha=getattr(args, "alpha", None), beta=getattr(args, "beta", None))
    except ValueError as error:
        parser.error(f"arguments --alpha, --beta: {error}")
    if args.device != "auto":
        try:
            torch.device(args.device)
        except RuntimeError as error:
            parser.error(f"argument --device: {args.device!r} is not a device: {error}")
        if args.device.startswith("cuda") and torch.cuda.device_count() == 0:
            parser.error(f"argument --device: {args.device!r}, but torch sees no CUDA device on this machine "
                         "(give cpu, or auto)")
    if getattr(args, "weights", None) is not None and (problem := weights_refused(getattr(args, "arch", ""))):
        parser.error(f"argument --weights: {problem}")
    if getattr(args, "radii", None) is not None and getattr(args, "adaptive", True) is False:
        parser.error("argument --radii: the radius grid is settled only by --adaptive certification; give both, "
                     "or neither")
    for flag, path in _classifier_paths(args):
        meta = _metadata(path)
        if meta is not None and ("sigmas" in meta or "experts" in meta or meta.get("role") == "estimator"):
            parser.error(f"argument {flag}: {path} is a checkpoint of a variance estimator or router "
                         f"(role {meta.get('role')!r}), not of a classifier")
    if args.command in SELECTOR_ARGUMENTS:
        flag, kind, key, words, other = SELECTOR_ARGUMENTS[args.command]
        path = getattr(args, flag.removeprefix("--"))
        meta = _metadata(path)
        if meta is not None and not isinstance(meta.get(key), list):
            parser.error(f"argument {flag}: {path} is not a checkpoint of {kind}: its metadata names no {words} "
                         f"(role {meta.get('role')!r}, {f'{other} {meta[other]}' if other in meta else f'no {other}'})")
        if meta is not None:
            _check_recorded_noise(parser, args, path, meta)


def _check_recorded_noise(parser: argparse.ArgumentParser, args: argparse.Namespace, path: Path, meta: dict) -> None:
    """The noise levels a selector was trained for are the ones it is run with: its σ_e (Sec. 5.1: the estimator
    is trained under the noise it is smoothed with) and, for a router, each expert's σ (its labels' radii)."""
    trained = meta.get("sigma_e")
    if trained is not None and float(trained) != args.sigma_e:
        parser.error(f"argument --sigma-e: {args.sigma_e:g}, but {path} was trained at sigma_e {float(trained):g} "
                     "(its metadata); run it at the noise it was trained under")
    recorded = dict(zip(meta.get("experts") or [], meta.get("expert_sigmas") or []))
    for spec in getattr(args, "expert", None) or []:
        sigma = recorded.get(spec["name"])
        if sigma is not None and float(sigma) != spec["sigma"]:
            parser.error(f"argument --expert: {spec['name']!r} has sigma {spec['sigma']:g}, but {path} was trained "
                         f"on its labels at sigma {float(sigma):g} (its metadata expert_sigmas)")


def _classifier_paths(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """The classifier checkpoints a command is given, with their flag."""
    given = getattr(args, "classifier", None)
    if isinstance(given, Path):
        return [("--classifier", given)]
    if args.command == "certify-router":
        return [("--expert", spec["classifier"]) for spec in args.expert]
    return [("--classifier", path) for _, path in given or []]


def _metadata(path: Path) -> dict | None:
    """A checkpoint's metadata, or None when it cannot be read (loading it reports why)."""
    from dualrs.io import metadata_path, read_metadata

    try:
        return read_metadata(metadata_path(path))
    except (OSError, ValueError):
        return None


def _out_of_memory(error: BaseException) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(error, torch.cuda.OutOfMemoryError)


LIST_ARGUMENTS = ("radii", "sigma", "sigmas")  # lists of numbers whose repeats are refused
# Outputs that are folders, by command (every other --out names a file).
OUTPUT_FOLDERS = {"train-denoiser": "--out", "convert-denoiser": "--out", "prepare-data": "--root"}


def _check_output(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The command's output can be written (:func:`~dualrs.validation.check_output_path`), before any work."""
    folder_flag = OUTPUT_FOLDERS.get(args.command)
    flag = folder_flag or "--out"
    path = getattr(args, flag.removeprefix("--"), None)
    if path is None:
        return
    try:
        check_output_path(flag, path, folder=folder_flag is not None)
    except ValueError as error:
        parser.error(str(error))


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    command = runlog.subcommand(parser, args.command)
    for name in LIST_ARGUMENTS:
        values = getattr(args, name, None)
        if isinstance(values, list) and (repeated := sorted({v for v in values if values.count(v) > 1})):
            command.error(f"argument --{name}: {', '.join(f'{v:g}' for v in repeated)} given more than once; "
                          "give each value once")
    _check_output(command, args)
    gpu_slot = None
    if args.command not in HOST_COMMANDS:
        import torch

        _check_arguments(command, args)
        if args.device in ("auto", "cuda"):
            gpu_slot = gpu_slots.pin_gpu(torch.cuda.device_count())
        from dualrs.seeding import deterministic

        keep_freed_memory()
        deterministic(args.seed, args.threads)
    device = None if args.command in HOST_COMMANDS else runlog.device_description(args.device)
    try:
        with runlog.logged(runlog.header(argv, args, runlog.input_paths(parser, args, INPUT_TYPES), device)):
            args.run(args)
    except (FileNotFoundError, ValueError, OutputError) as error:
        sys.exit(f"dualrs {args.command}: error: {error}")
    except RuntimeError as error:
        if not _out_of_memory(error):
            raise
        sys.exit(f"dualrs {args.command}: error: out of memory on device {args.device!r} "
                 f"({str(error).splitlines()[0]}); lower --batch-size")
    finally:
        if gpu_slot is not None:
            gpu_slot.release()


if __name__ == "__main__":
    main()

"""Reliability: non-finite values stop the job, one rule per setting everywhere, clear errors, no quiet hazards."""
from __future__ import annotations

import copy
import json
import math
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import beta as beta_distribution, binomtest
from torch import nn
from torch.utils.data import TensorDataset

from closed_form import ConstantClass
from dualrs import tasks, validation
from dualrs.cascade import CascadeSmooth
from dualrs.certify import certify_dataset
from dualrs.cli import main
from dualrs.data import prepare_dataset
from dualrs.denoise import DiffusionDenoiser
from dualrs.dual import DualSmooth
from dualrs.io import load_checkpoint, save_checkpoint
from dualrs.models import create_model
from dualrs.router import Expert, Router
from dualrs.smoothing import Smooth
from dualrs.train import Optim, train_classifier
from dualrs.validation import NeverCertifiesWarning, NonFiniteError, smallest_certifying_n

NAN, INF = math.nan, math.inf
X = torch.zeros(4)


class Logits(nn.Module):
    """Returns the same logits for every input of the batch."""

    def __init__(self, *logits: float):
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1).clone()


class MustNotRun(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the model must not run on bad settings")


class Returns(nn.Module):
    """Returns ``make(batch)``: for models whose output is not (batch, classes) logits."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def forward(self, x: torch.Tensor):
        return self.make(x)


def batchnorm_model(outputs: int, seed: int = 0) -> nn.Module:
    """A model whose votes depend on its batch in train mode: BatchNorm between two linear layers."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, outputs)).train()


@pytest.fixture(autouse=True)
def fresh_warnings():
    """Each test sees the once-per-setting warning afresh."""
    validation._warn_once.cache_clear()
    yield
    validation._warn_once.cache_clear()


# ------------------------------------------------------------------ 3. NaN does not go through

NON_FINITE = [(NAN, NAN), (INF, 0.0), (0.0, -INF)]


@pytest.mark.parametrize("logits", NON_FINITE)
def test_non_finite_logits_stop_certify_and_predict_naming_the_model(logits):
    smooth = Smooth(Logits(*logits), 2, 0.5)
    with pytest.raises(NonFiniteError, match=r"the base classifier returned non-finite logits \(NaN or inf\) for 8 "
                                             r"of 8 noisy copies of x at sigma=0.5"):
        smooth.certify(X, 8, 64, 0.001, 32)
    with pytest.raises(NonFiniteError, match="the base classifier returned non-finite logits"):
        smooth.predict(X, 64, 0.001, 32)


def test_one_nan_copy_among_many_is_enough_to_stop():
    def one_nan(x):
        out = torch.zeros(len(x), 2)
        out[0, 0] = NAN
        return out

    with pytest.raises(NonFiniteError, match="for 1 of 8 noisy copies"):
        Smooth(Returns(one_nan), 2, 0.5).sample_counts(X, 8, 8)


def test_all_nan_estimator_stops_dual_certification_instead_of_picking_the_smallest_sigma():
    dual = DualSmooth(Logits(NAN, NAN), {0.25: ConstantClass(1, 3), 0.5: ConstantClass(1, 3)}, 0.5, 3)
    with pytest.raises(NonFiniteError, match=re.escape("the variance estimator over sigmas [0.25, 0.5] returned "
                                                       "non-finite logits")):
        dual.certify(X, 8, 64, 0.001, 0.001, 32)
    with pytest.raises(NonFiniteError, match="the variance estimator"):
        dual.certify(X, 8, 64, 0.001, 0.001, 32, adaptive=True)


def test_nan_classifier_of_a_dual_router_or_cascade_stops_naming_it():
    good, bad = ConstantClass(0, 2), Logits(NAN, 0.0)
    with pytest.raises(NonFiniteError, match="the classifier for sigma=0.5 returned non-finite"):
        DualSmooth(ConstantClass(1, 2), {0.25: good, 0.5: bad}, 0.5, 2).certify(X, 8, 64, 0.001, 0.001, 32)
    router = Router(ConstantClass(1, 2), [Expert("a", 0.25, good), Expert("b", 0.5, bad)], 0.5, 2)
    with pytest.raises(NonFiniteError, match="expert 'b' returned non-finite"):
        router.certify(X, 8, 64, 0.001, 0.001, 32)
    with pytest.raises(NonFiniteError, match="the router over experts \\['a', 'b'\\] returned non-finite"):
        Router(Logits(NAN, NAN), [Expert("a", 0.25, good), Expert("b", 0.5, good)], 0.5, 2).certify(
            X, 8, 64, 0.001, 0.001, 32)
    with pytest.raises(NonFiniteError, match="the classifier for sigma=0.5 returned non-finite"):
        CascadeSmooth({0.5: bad, 0.25: good}, 2).certify(X, 8, 64, 0.001, 32)


def test_training_to_a_nan_loss_stops_naming_the_loss_and_epoch():
    x = torch.rand(16, 4)
    x[3, 0] = NAN
    model = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(NonFiniteError, match=r"my classifier: the training loss is nan in epoch 1; training diverged"):
        train_classifier(model, TensorDataset(x, torch.zeros(16, dtype=torch.long)), 0.25, Optim(2, 8, 0.01), 0,
                         desc="my classifier")
    assert all(torch.isfinite(p).all() for p in model.parameters())  # no step was taken on the NaN loss


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits")
    prepare_dataset("digits", root, seed=0)
    return root


def checkpoint(path: Path, num_classes: int = 10, poison: bool = False, **meta) -> Path:
    torch.manual_seed(0)
    model = create_model("digits_cnn", num_classes, 1)
    if poison:
        with torch.no_grad():
            model[1].weight[0, 0, 0, 0] = NAN
    save_checkpoint(path, model, {"arch": "digits_cnn", "num_classes": num_classes, "in_chans": 1, **meta})
    return path


def test_weights_that_went_nan_in_training_are_not_saved(digits, tmp_path, monkeypatch):
    def diverged(model, *args, **kwargs):
        with torch.no_grad():
            next(model.parameters()).fill_(INF)
        return [1.0]

    monkeypatch.setattr(tasks, "train_classifier", diverged)
    out = tmp_path / "clf.safetensors"
    with pytest.raises(SystemExit) as error:
        main(["train-classifier", "--dataset", "digits", "--root", str(digits), "--arch", "digits_cnn", "--sigma",
              "0.25", "--epochs", "1", "--batch-size", "8", "--lr", "0.01", "--out", str(out), "--device", "cpu"])
    assert f"the classifier trained for {out} has non-finite weights (NaN or inf) in 1 tensor(s)" in str(error.value)
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_a_checkpoint_with_nan_weights_is_refused_at_load_naming_file_and_tensor(tmp_path):
    path = checkpoint(tmp_path / "nan.safetensors", poison=True)
    with pytest.raises(NonFiniteError, match=re.escape(f"checkpoint {path} has non-finite weights (NaN or inf) in 1 "
                                                       "tensor(s), e.g. ['1.weight']")):
        load_checkpoint(path)


class NanUNet(nn.Module):
    def forward(self, sample: torch.Tensor, timestep: int) -> SimpleNamespace:
        out = torch.zeros_like(sample)
        out[0, 0, 0, 0] = NAN
        return SimpleNamespace(sample=out)


def test_a_denoiser_that_outputs_nan_stops_naming_the_denoiser():
    from diffusers import DDPMScheduler

    denoiser = DiffusionDenoiser(NanUNet(), DDPMScheduler().alphas_cumprod, 0.25)
    with pytest.raises(NonFiniteError,
                       match=r"the diffusion denoiser \(sigma=0.25, timestep \d+\) returned non-finite"):
        denoiser(torch.rand(2, 1, 8, 8))


# ------------------------------------------------------------------ 5. one rule per setting, everywhere

def entry_points():
    """Every public entry point that takes Monte Carlo settings, as f(**overrides) with good defaults."""
    two = {0.25: MustNotRun(), 0.5: MustNotRun()}
    experts = [Expert("a", 0.25, MustNotRun()), Expert("b", 0.5, MustNotRun())]
    dataset = TensorDataset(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))

    def settings(s, keys):
        return {k: s[k] for k in keys}

    return {
        "Smooth.certify": lambda s: Smooth(MustNotRun(), 2, s["sigma"]).certify(
            X, **settings(s, ("n0", "n", "alpha", "batch_size"))),
        "Smooth.predict": lambda s: Smooth(MustNotRun(), 2, s["sigma"]).predict(
            X, **settings(s, ("n", "alpha", "batch_size"))),
        "Smooth.certify_bound": lambda s: Smooth(MustNotRun(), 2, s["sigma"]).certify_bound(
            X, **settings(s, ("n0", "n", "alpha", "batch_size"))),
        "DualSmooth.certify": lambda s: DualSmooth(MustNotRun(), {**two, s["sigma"]: MustNotRun()}, 0.5, 2).certify(
            X, **settings(s, ("n0", "n", "alpha", "beta", "batch_size"))),
        "Router.certify": lambda s: Router(MustNotRun(), [*experts, Expert("c", s["sigma"], MustNotRun())], 0.5,
                                           2).certify(X, **settings(s, ("n0", "n", "alpha", "beta", "batch_size"))),
        "CascadeSmooth.certify": lambda s: CascadeSmooth({**two, s["sigma"]: MustNotRun()}, 2).certify(
            X, **settings(s, ("n0", "n", "alpha", "batch_size"))),
        "certify_dataset": lambda s: certify_dataset(
            MustNotRun(), dataset, s["sigma"], num_classes=2, **settings(s, ("n0", "n", "alpha", "batch_size"))),
    }


GOOD = {"n0": 8, "n": 64, "alpha": 0.001, "beta": 0.001, "batch_size": 32, "sigma": 0.75}
BAD = [
    ("sigma", INF, "must be a positive number, got inf"),
    ("sigma", NAN, "must be a positive number, got nan"),
    ("sigma", 0.0, "must be a positive number, got 0.0"),
    ("sigma", -0.5, "must be a positive number, got -0.5"),
    ("sigma", "0.5", "must be a positive number, got '0.5'"),
    ("alpha", 0.0, "alpha must lie in (0, 0.5), got 0.0"),
    ("alpha", 1.0, "alpha must lie in (0, 0.5), got 1.0"),
    ("alpha", NAN, "alpha must lie in (0, 0.5), got nan"),
    ("alpha", "0.01", "alpha must lie in (0, 0.5), got '0.01'"),
    ("n0", 0, "n0 must be a positive integer, got 0"),
    ("n", INF, "n must be a positive integer, got inf"),
    ("n", NAN, "n must be a positive integer, got nan"),
    ("n", 10.5, "n must be a positive integer, got 10.5"),
    ("n", True, "n must be a positive integer, got True"),
    ("n", 1e4, "n must be a positive integer, got 10000.0"),
    ("n0", 8.0, "n0 must be a positive integer, got 8.0"),
    ("batch_size", 32.0, "batch_size must be a positive integer, got 32.0"),
    ("batch_size", -32, "batch_size must be a positive integer, got -32"),
]


@pytest.mark.parametrize(("entry", "key", "value", "message"), [
    (entry, *bad) for entry in entry_points() for bad in BAD if not (entry == "Smooth.predict" and bad[0] == "n0")])
def test_every_entry_point_refuses_a_bad_setting_with_the_same_message_before_running(entry, key, value, message):
    settings = {**GOOD, key: value}
    with pytest.raises(ValueError, match=re.escape(message)):
        entry_points()[entry](settings)


@pytest.mark.parametrize("entry", ["DualSmooth.certify", "Router.certify"])
@pytest.mark.parametrize(("alpha", "beta"), [(0.25, 0.25), (0.3, 0.2), (0.49, 0.4)])
def test_alpha_plus_beta_of_one_half_or_more_is_refused(entry, alpha, beta):
    with pytest.raises(ValueError, match=re.escape(f"alpha + beta must be below 0.5, got alpha={alpha!r} + "
                                                   f"beta={beta!r}")):
        entry_points()[entry]({**GOOD, "alpha": alpha, "beta": beta})


def test_estimator_noise_level_and_expert_sigma_follow_the_same_rule():
    two = {0.25: MustNotRun(), 0.5: MustNotRun()}
    with pytest.raises(ValueError, match="sigma_e must be a positive number, got inf"):
        DualSmooth(MustNotRun(), two, INF, 2)
    with pytest.raises(ValueError, match="sigma_e must be a positive number, got nan"):
        Router(MustNotRun(), [Expert("a", 0.25, MustNotRun()), Expert("b", 0.5, MustNotRun())], NAN, 2)
    with pytest.raises(ValueError,
                       match=re.escape("every candidate sigma must be a positive number, got inf among [0.25, inf]")):
        Router(MustNotRun(), [Expert("a", 0.25, MustNotRun()), Expert("b", INF, MustNotRun())], 0.5, 2)


@pytest.fixture(scope="module")
def checkpoints(digits, tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("checkpoints")
    return SimpleNamespace(
        data=digits, root=root, classifier=checkpoint(root / "clf.safetensors", role="classifier"),
        estimator=checkpoint(root / "est.safetensors", 2, role="estimator", sigmas=[0.25, 0.5]),
        router=checkpoint(root / "router.safetensors", 2, role="estimator", experts=["a", "b"]))


def command(c: SimpleNamespace, name: str, out: Path, *args: str) -> list[str]:
    sampling = ["--n0", "8", "--n", "32", "--batch-size", "32", "--every", "100"]
    return [name, "--dataset", "digits", "--root", str(c.data), "--device", "cpu", "--threads", "1", "--out", str(out),
            *(sampling if name.startswith("certify") else []), *args]


def exits(argv: list[str], capsys, code: int, *messages: str) -> None:
    out = Path(argv[argv.index("--out") + 1])
    with pytest.raises(SystemExit) as error:
        main(argv)
    text = str(error.value) + capsys.readouterr().err
    assert error.value.code == code if code == 2 else error.value.code != 0
    for message in messages:
        assert message in text
    assert "Traceback" not in text
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


def test_cli_certify_dual_refuses_alpha_plus_beta_of_one_half(checkpoints, capsys, tmp_path):
    c = checkpoints
    exits(command(c, "certify-dual", tmp_path / "d.tsv", "--estimator", str(c.estimator), "--classifier",
                  f"0.25={c.classifier}", "--classifier", f"0.5={c.classifier}", "--sigma-e", "0.5", "--alpha", "0.3",
                  "--beta", "0.2"), capsys, 2, "arguments --alpha, --beta: alpha + beta must be below 0.5")


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--sigma", "inf", "argument --sigma: sigma must be a positive number, got inf"),
    ("--sigma", "0", "argument --sigma: sigma must be a positive number, got 0.0"),
    ("--classifier", "inf=clf.safetensors", "argument --classifier: sigma must be a positive number, got inf"),
])
def test_cli_refuses_a_non_finite_or_non_positive_sigma_with_the_library_message(checkpoints, capsys, tmp_path, flag,
                                                                               value, message):
    c = checkpoints
    name = "certify-cascade" if flag == "--classifier" else "certify-global"
    args = ["--alpha", "0.01", flag, value]
    if name == "certify-global":
        args += ["--classifier", str(c.classifier)]
    exits(command(c, name, tmp_path / "g.tsv", *args), capsys, 2, message)


# ------------------------------------------------------------------ 6. clear errors naming the file

def test_a_device_that_cannot_take_the_model_is_not_called_an_architecture_mismatch(tmp_path, monkeypatch):
    path = checkpoint(tmp_path / "clf.safetensors")
    to = nn.Module.to

    def out_of_memory(self, *args, **kwargs):
        if any(str(a).startswith("cuda") for a in [*args, *kwargs.values()]):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return to(self, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "to", out_of_memory)
    with pytest.raises(ValueError) as error:
        load_checkpoint(path, "cuda")
    assert f"checkpoint {path} was read, but the model cannot be placed on device 'cuda': CUDA out of memory" \
        in str(error.value)
    assert "does not match architecture" not in str(error.value)


def test_route_with_a_classifier_as_estimator_names_the_file_instead_of_a_key_error(checkpoints, capsys, tmp_path):
    c = checkpoints
    for wrong, kind in ((c.classifier, "role 'classifier', no experts"),
                        (c.router, "role 'estimator', experts ['a', 'b']")):
        exits(command(c, "route", tmp_path / "r.tsv", "--estimator", str(wrong), "--sigma-e", "0.5", "--n", "8",
                      "--batch-size", "8"), capsys, 2,
              f"argument --estimator: {wrong} is not a checkpoint of a variance estimator: its metadata names no "
              f"candidate sigmas ({kind})")


def test_an_estimator_given_as_classifier_is_refused(checkpoints, capsys, tmp_path):
    c = checkpoints
    exits(command(c, "certify-global", tmp_path / "g.tsv", "--classifier", str(c.estimator), "--sigma", "0.5",
                  "--alpha", "0.01"), capsys, 2,
          f"argument --classifier: {c.estimator} is a checkpoint of a variance estimator or router (role 'estimator')")


@pytest.mark.parametrize("outputs", [12, 1])
def test_a_model_with_another_number_of_outputs_than_classes_is_one_error(outputs):
    with pytest.raises(ValueError, match=re.escape(f"the base classifier must return logits of shape (batch, 10), one "
                                                   f"score per class, but returned shape (8, {outputs})")):
        Smooth(Logits(*range(outputs)), 10, 0.5).certify(X, 8, 64, 0.001, 32)


def test_an_estimator_with_more_outputs_than_sigmas_names_the_estimator():
    dual = DualSmooth(Logits(0.0, 0.0, 1.0), {0.25: ConstantClass(0, 2), 0.5: ConstantClass(0, 2)}, 0.5, 2)
    with pytest.raises(ValueError, match=re.escape("the variance estimator over sigmas [0.25, 0.5] must return logits "
                                                   "of shape (batch, 2)")):
        dual.certify(X, 8, 64, 0.001, 0.001, 32)


def test_a_router_expert_whose_file_is_missing_is_named(checkpoints, capsys, tmp_path):
    c = checkpoints

    def routed(first: Path) -> list[str]:
        experts = [{"name": "a", "sigma": 0.25, "classifier": str(first)},
                   {"name": "b", "sigma": 0.5, "classifier": str(c.classifier)}]
        return command(c, "certify-router", tmp_path / "r.tsv", "--router", str(c.router), "--sigma-e", "0.5",
                       "--alpha", "0.01", "--beta", "0.01", *(f for e in experts for f in ("--expert", json.dumps(e))))

    missing = tmp_path / "missing.safetensors"
    exits(routed(missing), capsys, 2, f"argument --expert: file not found: {missing}")
    no_metadata = tmp_path / "bare.safetensors"
    no_metadata.write_bytes(c.classifier.read_bytes())
    exits(routed(no_metadata), capsys, 1, f"checkpoint file not found: {no_metadata.with_suffix('.json')}")


# ------------------------------------------------------------------ 7. quiet hazards

def bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_smoothing_runs_a_train_mode_model_in_eval_mode_and_gives_its_mode_back():
    model = batchnorm_model(3)
    model[3].eval()  # a submodule the caller left in eval mode stays so
    before = bn_state(model)
    reference = copy.deepcopy(model).eval()
    x = torch.rand(4)
    counts = {b: Smooth(model, 3, 0.5).sample_counts(x, 100, b, torch.Generator().manual_seed(1)) for b in (7, 100)}
    expected = Smooth(reference, 3, 0.5).sample_counts(x, 100, 100, torch.Generator().manual_seed(1))
    assert np.array_equal(counts[7], expected) and np.array_equal(counts[100], expected)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running stats untouched
    assert [m.training for m in model] == [True, True, True, False]


@pytest.mark.parametrize("method", ["dual", "router", "cascade"])
def test_estimator_router_and_cascade_models_are_evaluated_in_eval_mode(method):
    first, second, third = batchnorm_model(2, 0), batchnorm_model(2, 1), batchnorm_model(2, 2)
    models = (first, second, third)
    before = [bn_state(m) for m in models]
    if method == "dual":
        DualSmooth(first, {0.25: second, 0.5: third}, 0.5, 2).certify(X, 8, 64, 0.01, 0.01, 32)
    elif method == "router":
        Router(first, [Expert("a", 0.25, second), Expert("b", 0.5, third)], 0.5, 2).certify(X, 8, 64, 0.01, 0.01, 32)
    else:
        CascadeSmooth({1.0: first, 0.5: second, 0.25: third}, 2).certify(X, 8, 64, 0.01, 32)
    ran = [not all(torch.equal(b[k], v) for k, v in m.state_dict().items()) for b, m in zip(before, models)]
    assert not any(ran) and all(m.training for m in models)


def test_certify_dataset_leaves_the_model_in_its_mode():
    model = batchnorm_model(2)
    certify_dataset(model, TensorDataset(torch.rand(2, 4), torch.zeros(2, dtype=torch.long)), 0.5, n0=8, n=32,
                    alpha=0.01, batch_size=16)
    assert model.training


def test_n_too_small_to_certify_warns_once_naming_the_smallest_n():
    smooth = Smooth(ConstantClass(0, 2), 2, 0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert smooth.certify(X, 4, 9, 0.001, 9) == (-1, 0.0)
    never = [w for w in caught if issubclass(w.category, NeverCertifiesWarning)]
    assert len(never) == 1
    assert "n = 9 draws can never certify at level 0.001: even 9 votes of 9 give p_A_lower = 0.4642" in str(
        never[0].message)
    assert "the smallest n that can is 10" in str(never[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NeverCertifiesWarning)
        prediction, radius = smooth.certify(X, 4, 10, 0.001, 10)
    assert prediction == 0 and radius > 0


def test_dual_warns_for_the_level_that_cannot_certify():
    dual = DualSmooth(ConstantClass(0, 2), {0.25: ConstantClass(0, 2), 0.5: ConstantClass(0, 2)}, 0.5, 2)
    with pytest.warns(NeverCertifiesWarning, match="at level 1e-06.*the smallest n that can is 20"):
        dual.certify(X, 4, 12, 0.01, 1e-6, 12)


@pytest.mark.parametrize("level", [0.5 ** k * f for k in range(1, 40, 3) for f in (0.999, 1.0, 1.001)] + [1e-300])
def test_smallest_certifying_n_is_the_first_n_whose_best_bound_passes(level):
    n = smallest_certifying_n(level)
    assert beta_distribution.ppf(level, n, 1) > 0.5
    assert n == 1 or beta_distribution.ppf(level, n - 1, 1) <= 0.5
    m = smallest_certifying_n(level, "binomial")
    assert binomtest(m, m, 0.5).pvalue <= level and (m == 1 or binomtest(m - 1, m - 1, 0.5).pvalue > level)


def test_predict_warns_with_the_binomial_test_count():
    with pytest.warns(NeverCertifiesWarning, match="the smallest n that can is 11"):
        assert Smooth(ConstantClass(0, 2), 2, 0.5).predict(X, 10, 0.001, 10) == -1


# ------------------------------------------------------------------ adversarial cases of the library and CLI

ADVERSARIAL = [
    ("1-D model output", lambda: Smooth(Returns(lambda x: torch.zeros(len(x))), 2, 0.5).certify(X, 4, 8, 0.01, 8),
     ValueError, "must return logits of shape (batch, 2), one score per class, but returned shape (4,)"),
    ("model returning a tuple", lambda: Smooth(Returns(lambda x: (torch.zeros(len(x), 2),)), 2, 0.5).certify(
        X, 4, 8, 0.01, 8), TypeError, "the base classifier must return a tensor of logits, got tuple"),
    ("integer input", lambda: Smooth(MustNotRun(), 2, 0.5).certify(torch.zeros(4, dtype=torch.long), 4, 8, 0.01, 8),
     TypeError, "x must be a floating-point tensor, got dtype torch.int64"),
    ("non-integer num_classes", lambda: Smooth(MustNotRun(), 2.5, 0.5), ValueError,
     "num_classes must be a positive integer, got 2.5"),
    ("sigma candidate given as text",
     lambda: DualSmooth(MustNotRun(), {0.25: MustNotRun(), "0.5": MustNotRun()}, 0.5, 2),
     ValueError, "every candidate sigma must be a positive number, got '0.5' among [0.25, '0.5']"),
    ("NaN input to the router", lambda: Router(MustNotRun(), [Expert("a", 0.25, MustNotRun()), Expert(
        "b", 0.5, MustNotRun())], 0.5, 2).certify(torch.tensor([NAN]), 4, 8, 0.01, 0.01, 8), ValueError,
     "x has 1 non-finite value(s)"),
    ("NaN input to the cascade", lambda: CascadeSmooth({0.5: MustNotRun()}, 2).certify(torch.tensor([INF]), 4, 8, 0.01,
                                                                                         8),
     ValueError, "x has 1 non-finite value(s)"),
    ("empty dataset", lambda: certify_dataset(MustNotRun(), TensorDataset(torch.zeros(0, 4), torch.zeros(0)), 0.5,
                                              n0=4, n=8, alpha=0.01, batch_size=8),
     ValueError, "the dataset has no items to certify"),
    ("certify_dataset every=0", lambda: certify_dataset(MustNotRun(), TensorDataset(torch.zeros(2, 4), torch.zeros(2)),
                                                         0.5, n0=4, n=8, alpha=0.01, batch_size=8, every=0),
     ValueError, "every must be a positive integer, got 0"),
    ("certify_dataset on a 1-D-output model", lambda: certify_dataset(
        Returns(lambda x: torch.zeros(len(x))), TensorDataset(torch.zeros(2, 4), torch.zeros(2)), 0.5, n0=4, n=8,
        alpha=0.01, batch_size=8),
     ValueError, "the model must return logits of shape (batch, classes), got (1,) for a batch of 1"),
]


@pytest.mark.parametrize(("case", "call", "error", "message"), ADVERSARIAL, ids=[c[0] for c in ADVERSARIAL])
def test_adversarial_library_inputs_are_refused_clearly(case, call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()


def test_unsorted_sigma_candidates_are_sorted_and_class_k_is_the_kth_smallest():
    dual = DualSmooth(ConstantClass(0, 2), {0.5: ConstantClass(1, 3), 0.25: ConstantClass(2, 3)}, 0.5, 3)
    certificate = dual.certify(X, 4, 64, 0.01, 0.01, 64)
    assert dual.sigmas == [0.25, 0.5] and certificate.sigma == 0.25 and certificate.prediction == 2


def test_cli_adversarial_paths_and_devices(checkpoints, capsys, tmp_path):
    c = checkpoints
    base = ["--sigma", "0.5", "--alpha", "0.01"]
    exits(command(c, "certify-global", tmp_path / "g.tsv", "--classifier", str(c.root), *base), capsys, 2,
          f"argument --classifier: {c.root} is a directory, not a file")
    exits(command(c, "certify-global", tmp_path / "g.tsv", "--classifier", str(c.classifier), "--device", "gpu", *base),
          capsys, 2, "argument --device: 'gpu' is not a device")
    truncated = checkpoint(tmp_path / "truncated.safetensors")
    truncated.write_bytes(truncated.read_bytes()[:1000])
    exits(command(c, "certify-global", tmp_path / "g.tsv", "--classifier", str(truncated), *base), capsys, 1,
          f"checkpoint {truncated} is not a safetensors file, or is truncated")


def test_cli_outputs_that_cannot_be_written_are_refused_before_work(checkpoints, capsys, tmp_path):
    c = checkpoints
    base = ["--classifier", str(c.classifier), "--sigma", "0.5", "--alpha", "0.01"]
    a_file = tmp_path / "notes.json"
    a_file.write_text("{}")
    exits(command(c, "certify-global", a_file / "g.tsv", *base), capsys, 2,
          f"argument --out: cannot write {a_file / 'g.tsv'}: {a_file} is a file, not a folder")
    for argv, flag in ((["train-denoiser", "--dataset", "digits", "--root", str(c.data), "--steps", "1", "--batch-size",
                         "8", "--lr", "0.001", "--device", "cpu", "--out", str(a_file)], "--out"),
                       (["prepare-data", "--dataset", "digits", "--root", str(a_file)], "--root")):
        with pytest.raises(SystemExit) as error:
            main(argv)
        assert error.value.code == 2
        assert f"argument {flag}: {a_file} is a file; name the folder to write" in capsys.readouterr().err
        assert a_file.read_text() == "{}"


def test_cli_settings_that_contradict_each_other_or_the_checkpoint_are_refused(checkpoints, capsys, tmp_path,
                                                                             monkeypatch):
    c = checkpoints
    classifiers = ["--classifier", f"0.25={c.classifier}", "--classifier", f"0.5={c.classifier}"]
    dual = ["--alpha", "0.01", "--beta", "0.01", *classifiers]
    estimator = checkpoint(tmp_path / "est.safetensors", 2, role="estimator", sigmas=[0.25, 0.5], sigma_e=0.5)
    exits(command(c, "certify-dual", tmp_path / "d.tsv", "--estimator", str(estimator), "--sigma-e", "0.25", *dual),
          capsys, 2, f"argument --sigma-e: 0.25, but {estimator} was trained at sigma_e 0.5")
    exits(command(c, "certify-dual", tmp_path / "d.tsv", "--estimator", str(estimator), "--sigma-e", "0.5",
                  "--radii", "0", "1", *dual), capsys, 2, "argument --radii: the radius grid is settled only by --adaptive")
    router = checkpoint(tmp_path / "router.safetensors", 2, role="estimator", experts=["a", "b"],
                        expert_sigmas=[0.25, 0.5], sigma_e=1.0)
    experts = [f'{{"name": "{name}", "sigma": {sigma}, "classifier": "{c.classifier}"}}' for name, sigma in
               (("a", 2.0), ("b", 0.5))]
    exits(command(c, "certify-router", tmp_path / "r.tsv", "--router", str(router), "--sigma-e", "1", "--alpha",
                  "0.01", "--beta", "0.01", "--expert", experts[0], "--expert", experts[1]), capsys, 2,
          f"argument --expert: 'a' has sigma 2, but {router} was trained on its labels at sigma 0.25")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    exits(command(c, "certify-global", tmp_path / "g.tsv", "--classifier", str(c.classifier), "--sigma", "0.5",
                  "--alpha", "0.01", "--device", "cuda"), capsys, 2,
          "argument --device: 'cuda', but torch sees no CUDA device on this machine")
    labels = tmp_path / "labels.tsv"
    exits(command(c, "train-estimator", tmp_path / "e.safetensors", "--labels", f"0.25={labels}", "--labels",
                  f"0.5={labels}", "--arch", "digits_cnn", "--weights", str(c.classifier), "--sigma-e", "0.5", "--epochs",
                  "1", "--batch-size", "8", "--lr", "0.01"), capsys, 2,
          "argument --weights: digits_cnn is built from scratch and takes no weights")
    exits(command(c, "train-estimator", tmp_path / "e.safetensors", "--labels", f"0.25={labels}", "--arch", "digits_cnn",
                  "--sigma-e", "0.5", "--epochs", "1", "--batch-size", "8", "--lr", "0.01"), capsys, 1,
          "--labels given once; the estimator chooses among at least two sigmas")
    with pytest.raises(SystemExit) as error:
        main(["report", "--dual", f"d={labels}", "--radii", "0", "--sigmas", "0.5", "0.50", "--table",
              str(tmp_path / "t.csv")])
    assert error.value.code == 2 and "argument --sigmas: 0.5 given more than once" in capsys.readouterr().err


def test_out_of_memory_while_certifying_is_one_line_naming_the_device_and_the_remedy(checkpoints, capsys, tmp_path,
                                                                                    monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore detail")

    monkeypatch.setattr(tasks, "certify_smoothed", out_of_memory)
    c = checkpoints
    exits(command(c, "certify-global", tmp_path / "g.tsv", "--classifier", str(c.classifier), "--sigma", "0.5",
                  "--alpha", "0.01"), capsys, 1,
          "dualrs certify-global: error: out of memory on device 'cpu' (CUDA out of memory. Tried to allocate "
          "20.00 GiB); lower --batch-size")

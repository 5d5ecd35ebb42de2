"""dualrs.config_checks: the configuration's cross-key rules, without Snakemake (fast)."""
from __future__ import annotations

import copy
import inspect
import math
import random
import re
from pathlib import Path

import pytest
import yaml

from dualrs.config_checks import (
    CIFAR10_SPLITS,
    DIGITS_SAMPLES,
    REGISTRY_ARCHS,
    REGISTRY_OPTIONS,
    SIGMA_PATTERN,
    config_problems,
    config_warnings,
    model_problems,
    number_spelling,
    numeric_text_hint,
    router_problems,
    sigma_spelling,
    whole_floats_to_int,
    yaml_problems,
)

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())

# An experiment as the workflow sees it after schema validation (defaults filled in).
BASE = {
    "seed": 0,
    "default_targets": ["tiny"],
    "radii": [0.0, 0.5],
    "data": {"digits": {"test_fraction": 0.3}, "cifar10": {"test_every": 1}},
    "experiments": {"tiny": {
        "data": "digits", "data_options": {}, "sigmas": [0.25, 0.5], "sigma_e": None,
        "classifier": {"arch": "digits_cnn", "options": {}, "weights": None, "noise": "per_sigma",
                       "train": {"epochs": 3, "batch_size": 128, "lr": 0.003, "milestones": []}},
        "estimator": {"arch": "digits_cnn", "options": {}, "weights": None,
                      "train": {"epochs": 2, "batch_size": 128, "lr": 0.003, "milestones": []}},
        "iterations": 1, "retrain_estimator": False,
        "label": {"n0": 8, "n": 16, "alpha": 0.01, "every": 20, "shards": 2},
        "certify": {"n0": 8, "n": 64, "alpha": 0.01, "beta": 0.01, "every": 30, "shards": 2},
        "batch_size": 64, "cascade": {"threshold": 0.5, "variants": ["published"]}, "resources": {},
    }},
}


def config(**changes) -> dict:
    """BASE with ``changes`` to experiment tiny (dotted keys: ``certify.shards``)."""
    result = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = result["experiments"]["tiny"]
        for part in parents:
            node = node[part]
        node[last] = value
    return result


def test_the_base_configuration_is_sound():
    assert config_problems(config()) == [] and config_warnings(config()) == []


# ------------------------------------------------------------------ σ in file names


@pytest.mark.parametrize("sigma,spelling", [(0.25, "0.25"), (1.0, "1"), ("0.5", "0.5"), (1e-4, "0.0001"),
                                            (0.123456, "0.123456"), (999999, "999999"), (0, "0")])
def test_representable_sigmas_are_spelled_as_ever(sigma, spelling):
    assert sigma_spelling(sigma) == spelling


@pytest.mark.parametrize("sigma", [1e-5, 9.99e-5, 1e6, 2.5e7, 0.1234567, 123456.7, math.inf, math.nan, -0.5])
def test_sigmas_file_names_cannot_spell_are_refused(sigma):
    with pytest.raises(ValueError, match="file-name spelling|finite"):
        sigma_spelling(sigma)


def test_every_accepted_sigma_matches_the_wildcard_and_reads_back_as_itself():
    """The property the pipeline relies on: a path's sigma is the configured sigma, and distinct sigmas
    have distinct paths (so 'the same sigma in file names' cannot happen)."""
    rng = random.Random(0)
    spelled = {}
    for _ in range(20000):
        sigma = round(10 ** rng.uniform(-6, 7), rng.randint(0, 9))
        try:
            spelling = sigma_spelling(sigma)
        except ValueError:
            assert not re.fullmatch(SIGMA_PATTERN, f"{sigma:g}") or float(f"{sigma:g}") != sigma
            continue
        assert re.fullmatch(SIGMA_PATTERN, spelling) and float(spelling) == sigma
        assert spelled.setdefault(spelling, sigma) == sigma


def test_common_smk_spells_sigmas_and_matches_wildcards_with_the_checked_function():
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    assert "sigma=SIGMA_PATTERN" in common
    fmt = common[common.index("def fmt(sigma):"):].split("\n\n")[0]
    assert fmt.rstrip().endswith("return sigma_spelling(sigma)")


@pytest.mark.parametrize("key,value", [("sigmas", [0.25, 1e-5]), ("sigmas", [0.25, 1e6]),
                                       ("sigmas", [0.25, 0.1234567]), ("classifier__noise", 2e-5)])
def test_sigma_keys_are_checked_and_named(key, value):
    problems = config_problems(config(**{key: value}))
    assert len(problems) == 1 and problems[0].startswith(f"config: experiments.tiny.{key.replace('__', '.')}")


def test_mixed_noise_trains_one_classifier_without_a_denoiser():
    assert config_problems(config(classifier__noise="mixed")) == []
    denoised = config(classifier__noise="mixed", denoiser={"train": {"steps": 10, "batch_size": 8, "lr": 0.001}})
    assert config_problems(denoised) == [
        "config: experiments.tiny.classifier.noise is mixed (noise drawn from Sigma), but with a `denoiser` the "
        "classifier sees denoised inputs: give the noise it trains under as a number"]


# ------------------------------------------------------------------ counts and YAML


def test_whole_number_floats_of_every_integer_key_become_ints():
    raw = {"seed": 3.0, "data": {"cifar10": {"test_every": 2.0}, "imagenet": {"source": "x", "crop": 224.0}},
           "experiments": {"e": {
               "data": "digits", "sigmas": [0.25, 0.5],
               "classifier": {"arch": "digits_cnn", "train": {"epochs": 1.0e2, "batch_size": 64.0, "lr": 1.0,
                                                              "milestones": [10.0, 20.0]}},
               "estimator": {"arch": "digits_cnn", "copies": 2.0,
                             "train": {"epochs": 1, "batch_size": 64, "lr": 1.0, "num_workers": 0.0}},
               "denoiser": {"train": {"steps": 1.0e3, "batch_size": 8.0, "lr": 1.0}},
               "label": {"n0": 8.0, "n": 1.0e+4, "alpha": 0.01, "every": 2.0, "shards": 4.0},
               "certify": {"n0": 8, "n": 64, "alpha": 0.01},
               "batch_size": 1.0e3, "iterations": 2.0,
               "finetune": {"epochs": 1.0, "batch_size": 8, "lr": 1.0, "n_route": 1.0e2},
               "ablations": {"n_label": [100.0, 1.0e3], "lam": [0.0, 40.0]},
               "resources": {"gpu": 1.0, "mem_mb": 4.0e3, "runtime": 60.0}}}}
    whole_floats_to_int(raw, SCHEMA)
    e = raw["experiments"]["e"]
    ints = [raw["seed"], raw["data"]["cifar10"]["test_every"], raw["data"]["imagenet"]["crop"],
            e["classifier"]["train"]["epochs"], e["classifier"]["train"]["batch_size"],
            *e["classifier"]["train"]["milestones"], e["estimator"]["copies"], e["estimator"]["train"]["num_workers"],
            e["denoiser"]["train"]["steps"], e["denoiser"]["train"]["batch_size"], *e["label"].values(),
            e["batch_size"], e["iterations"], e["finetune"]["epochs"], e["finetune"]["n_route"],
            *e["ablations"]["n_label"], *e["resources"].values()]
    ints.remove(0.01)  # label.alpha
    assert all(type(v) is int for v in ints), ints
    assert e["label"]["n"] == 10000 and e["ablations"]["n_label"] == [100, 1000]
    # numbers stay numbers: a float key keeps its float, a fraction of a count is left for the schema to refuse
    assert type(e["classifier"]["train"]["lr"]) is float and e["ablations"]["lam"] == [0.0, 40.0]
    fractional = {"experiments": {"e": {"label": {"n": 1.5}}}}
    whole_floats_to_int(fractional, SCHEMA)
    assert fractional["experiments"]["e"]["label"]["n"] == 1.5


def test_numbers_yaml_reads_as_text_get_the_spelling_to_write():
    assert numeric_text_hint("1e4", "integer") == " (YAML reads numbers like 1e4 as text: write 10000)"
    assert "write 1.0e-3 or 0.001" in numeric_text_hint("1e-3", "number")
    assert "write 1.0e-3 or 0.001" in numeric_text_hint("1.5e0", "integer")
    assert numeric_text_hint("0.25", ["number"]) == " (a number in quotes is text: write it without quotes)"


def test_duplicate_keys_and_yaml_1_1_integers_are_found(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 010\nexperiments:\n  a:\n    sigmas: [0.25, 0.5]\n    n: 16\n    n: 32\n"
                    "  b: {runtime: 1:30, n: 100, m: '010'}\n")
    problems = yaml_problems([path])
    assert problems == [f"{path}:1: seed: 010 reads as 8 in YAML 1.1 (octal or base 60); write 8 if that is meant",
                        f"{path}:6: key 'n' is given twice (also on line 5); YAML would keep only the last value",
                        f"{path}:7: runtime: 1:30 reads as 90 in YAML 1.1 (octal or base 60); write 90 if that is "
                        "meant"]
    assert yaml_problems([REPO / "config" / "config.yaml", REPO / "config" / "quick.yaml"]) == []


# ------------------------------------------------------------------ splits and shards


def test_digits_and_cifar10_sizes_are_the_datasets():
    from sklearn.datasets import load_digits

    assert len(load_digits().target) == DIGITS_SAMPLES and CIFAR10_SPLITS == {"train": 50000, "test": 10000}


@pytest.mark.parametrize("key,value,message", [
    # 540 digits in the test split at test_fraction 0.3: every 30 selects 18, every 540 one
    ("certify__shards", 19, "experiments.tiny.certify.shards is 19, but every = 30 selects 18 test input(s)"),
    ("certify__every", 540, "experiments.tiny.certify.shards is 2, but every = 540 selects 1 test input(s)"),
    ("label__every", 1257, "experiments.tiny.label.shards is 2, but every = 1257 selects 1 train input(s)"),
])
def test_shards_without_input_are_refused_for_digits(key, value, message):
    problems = config_problems(config(**{key: value}))
    assert len(problems) == 1 and message in problems[0]
    assert not config_problems(config(**{key: value - 1}))  # the largest setting that still feeds every shard


def test_shards_without_input_are_refused_for_cifar10():
    cifar = config(data="cifar10", certify={"n0": 8, "n": 64, "alpha": 0.01, "beta": 0.01, "every": 1,
                                            "shards": 8})
    cifar["data"]["cifar10"]["test_every"] = 2000  # 5 of the 10000 test images
    (problem,) = config_problems(cifar)
    assert "certify.shards is 8, but every = 1 selects 5 test input(s) (CIFAR-10 has 5 test images with " \
           "data.cifar10.test_every = 2000)" in problem
    cifar["data"]["cifar10"]["test_every"] = 1250
    assert config_problems(cifar) == []


def test_imagenet_folders_are_counted_when_they_exist(tmp_path):
    for wnid in ("n01", "n02"):
        (tmp_path / "val" / wnid).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "val" / wnid / f"{i}.JPEG").touch()
        (tmp_path / "val" / wnid / "notes.txt").touch()
    imagenet = config(data="imagenet", certify={"n0": 8, "n": 64, "alpha": 0.01, "beta": 0.01, "every": 1,
                                                "shards": 3}, label={"n0": 8, "n": 16, "alpha": 0.01})
    imagenet["data"]["imagenet"] = {"source": str(tmp_path / "val"), "every": 2, "train_source": str(tmp_path / "no")}
    assert config_problems(imagenet) == []  # 6 images, every 2nd: 3 inputs for 3 shards; no train folder yet
    imagenet["experiments"]["tiny"]["certify"]["shards"] = 4
    (problem,) = config_problems(imagenet)
    assert f"certify.shards is 4, but every = 1 selects 3 test input(s) ({tmp_path / 'val'} (data.imagenet.source) " \
           "has 6 images, of which data.imagenet.every = 2 keeps 3)" in problem
    del imagenet["data"]["imagenet"]["train_source"]
    assert any("needs data.imagenet.train_source" in p for p in config_problems(imagenet))


@pytest.mark.parametrize("fraction,split,size", [(0.005, "test", 9), (0.995, "train", 8)])
def test_a_digits_split_too_small_to_stratify_is_refused(fraction, split, size):
    cfg = config()
    cfg["data"]["digits"]["test_fraction"] = fraction
    assert any(f"data.digits.test_fraction is {fraction:g}, which leaves {size} of the 1797 digits for {split}" in p
               for p in config_problems(cfg))


# ------------------------------------------------------------------ other cross-key rules


@pytest.mark.parametrize("changes,message", [
    ({"radii": []}, None),  # the schema's (minItems); listed here so the rule's owner is clear
    ({"ablations": {"alpha_beta": [[0.001, 0.001], [0.3, 0.25]]}},
     "experiments.tiny.ablations.alpha_beta[1]: alpha + beta = 0.55 must lie below 0.5"),
    ({"ablations": {"lam": [0.1, 0.1234567]}}, "experiments.tiny.ablations.lam[1]: 0.1234567 has no exact"),
    ({"ablations": {"lam": [0.1, 0.1000000001]}}, "ablations.lam has values that coincide in paths"),
    ({"ablations": {"sigmas": [[0.25, 2.0]]}}, "[0.25, 2.0] is not a set of at least two distinct sigmas"),
    ({"ablations": {"sigma_e": [0.5, 0.1234567]}}, "experiments.tiny.ablations.sigma_e[1]: 0.1234567 has no exact file-name"),
    ({"ablations": {"sigma_e": [0.00001]}}, "experiments.tiny.ablations.sigma_e[0]: sigma 1e-05 has no file-name"),
    ({"router": {"experts": [{"name": "a", "sigma": 0.25, "classifier": "x"},
                             {"name": "a", "sigma": 0.5, "classifier": "y"}]}},
     "experiments.tiny.router.experts: name(s) 'a' given to more than one expert"),
    ({"classifier__arch": "resnet18"}, "experiments.tiny.classifier.arch: unknown architecture 'resnet18'"),
    ({"estimator__arch": "timm/"}, "experiments.tiny.estimator.arch: 'timm/' names no model"),
    ({"estimator__arch": "hf/ViTForImageClassification"}, "set experiments.tiny.estimator.weights"),
    ({"iterations": 2}, "experiments.tiny.iterations is 2, which needs a `finetune` block"),
    ({"data": "cifar10", "data_options": {"resolution": 16}}, "data_options.resolution is an option of digits"),
    ({"data": "cifar10", "data_options": {"contrast": [0.5, 1.0]}}, "data_options.contrast is an option of digits"),
])
def test_cross_key_rules_name_the_key(changes, message):
    problems = config_problems(config(**changes))
    if message is None:
        return
    assert len(problems) == 1 and message in problems[0], problems


def test_reserved_experiment_names_are_refused():
    cfg = config()
    cfg["experiments"]["tables"] = cfg["experiments"].pop("tiny")
    cfg["default_targets"] = ["tables"]
    assert config_problems(cfg) == ["config: experiments.tables: the name 'tables' is reserved (results/tables/ holds "
                                    "every experiment's tables); rename the experiment"]


def test_imagenet_crop_beyond_resize_is_refused():
    cfg = config()
    cfg["data"]["imagenet"] = {"source": "/nowhere", "resize": 256, "crop": 384}
    assert config_problems(cfg) == ["config: data.imagenet.crop is 384, above resize = 256: the centre crop would "
                                    "pad the resized image with black borders; use crop <= resize"]


def test_router_experts_must_be_products_of_an_experiment():
    cfg = config(router={"experts": [
        {"name": "a", "sigma": 0.25, "classifier": "results/tiny/models/classifier_sigma0.25.safetensors"},
        {"name": "b", "sigma": 0.5, "classifier": "results/other/models/classifier_sigma0.5.safetensors"},
        {"name": "c", "sigma": 0.5, "classifier": "results/tiny/models/clasifier_sigma0.5.safetensors"},
        {"name": "d", "sigma": 0.5, "classifier": "models/mine.safetensors"}]})
    built = {"results/tiny/models/classifier_sigma0.25.safetensors",
             "results/tiny/models/classifier_sigma0.5.safetensors"}
    assert router_problems(cfg, "tiny", lambda name: built) == [
        "config: experiments.tiny.router.experts[1].classifier is results/other/models/classifier_sigma0.5.safetensors, "
        "but no experiment 'other' builds it (experiments: tiny)",
        "config: experiments.tiny.router.experts[2].classifier is results/tiny/models/clasifier_sigma0.5.safetensors, "
        "which experiment 'tiny' does not build; it builds results/tiny/models/classifier_sigma0.25.safetensors, "
        "results/tiny/models/classifier_sigma0.5.safetensors"]


def test_keys_without_effect_warn():
    cfg = config(retrain_estimator=True, finetune={"epochs": 1, "batch_size": 8, "lr": 0.1},
                 label={"n0": 8, "n": 16, "alpha": 0.01, "adaptive": True})
    assert config_warnings(cfg) == [
        "config: experiments.tiny.finetune is ignored with iterations: 1 (no finetuning round)",
        "config: experiments.tiny.retrain_estimator is ignored with iterations: 1 (no finetuning round whose "
        "estimator could be retrained)",
        "config: experiments.tiny.label.adaptive is ignored: labels sample sequentially with "
        "label.radius_precision (certify.adaptive is dual RS's sequential sampling)"]


def test_registry_archs_are_the_model_registry():
    from dualrs.models import _REGISTRY

    assert tuple(sorted(_REGISTRY)) == REGISTRY_ARCHS
    for arch, builder in _REGISTRY.items():
        assert REGISTRY_OPTIONS[arch] == tuple(inspect.signature(builder).parameters)[2:], arch


@pytest.mark.parametrize("part,changes,message", [
    ("classifier", {"options": {"bogus": 1}}, "classifier.options: digits_cnn takes no option 'bogus'; its options: width"),
    ("estimator", {"options": {"width": -1}}, "estimator.options.width: -1 is not a positive integer"),
    ("estimator", {"options": {"width": 8.5}}, "estimator.options.width: 8.5 is not a positive integer"),
    ("estimator", {"weights": "ck.safetensors"}, "estimator.weights: digits_cnn is built from scratch and takes no weights"),
])
def test_registry_architectures_are_checked_before_a_job_builds_them(part, changes, message):
    cfg = config()
    cfg["experiments"]["tiny"][part].update(changes)
    problems = config_problems(cfg)
    assert len(problems) == 1 and f"config: experiments.tiny.{message}" in problems[0], problems


def test_registry_datasets_are_the_dataset_registry():
    from dualrs.config_checks import REGISTRY_DATASETS
    from dualrs.data import DATASETS

    assert tuple(sorted(DATASETS)) == REGISTRY_DATASETS


def test_unknown_timm_models_and_transformers_classes_are_found(tmp_path):
    cfg = config(ablations={"estimator_arch": ["digits_cnn", "timm/resnet18", "timm/resnet5O"]},
                 classifier={"arch": "timm/vit_base_patch16_224.augreg_in21k", "weights": str(tmp_path)})
    problems = model_problems("tiny", cfg["experiments"]["tiny"])
    assert problems[0].startswith("config: experiments.tiny.ablations.estimator_arch[2]: timm has no model 'resnet5O'")
    assert "similar: resnet50" in problems[0]
    assert problems[1] == (f"config: experiments.tiny.classifier.weights: {tmp_path} is a folder, but "
                           "timm/vit_base_patch16_224.augreg_in21k takes a checkpoint file (.safetensors or .pth)")
    assert len(problems) == 2
    hf = config(estimator={"arch": "hf/NoSuchModelForImageClassification", "weights": str(tmp_path / "x")})
    assert model_problems("tiny", hf["experiments"]["tiny"]) == [
        "config: experiments.tiny.estimator.arch: transformers has no model class 'NoSuchModelForImageClassification' "
        f"(transformers {__import__('transformers').__version__}), e.g. hf/ViTForImageClassification"]


def test_paper_configurations_pass():
    """config/config.yaml (and the quick overlay) after the schema's defaults: no problem."""
    from snakemake.utils import update_config, validate

    full = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    quick = copy.deepcopy(full)
    update_config(quick, yaml.safe_load((REPO / "config" / "quick.yaml").read_text()))
    for cfg in (full, quick):
        whole_floats_to_int(cfg, SCHEMA)
        validate(cfg, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
        assert config_problems(cfg) == []


def test_number_spelling_is_exact_or_refused():
    assert number_spelling(0.0005) == "0.0005" and number_spelling(1e-5) == "1e-05"
    with pytest.raises(ValueError, match="at most 6 significant digits"):
        number_spelling(0.1000000001)


def test_milestones_past_the_last_epoch_warn_without_stopping_a_shortened_run():
    cfg = config(estimator__train={"epochs": 10, "batch_size": 8, "lr": 0.1, "milestones": [5, 10]})
    assert config_problems(cfg) == []
    assert config_warnings(cfg) == ["config: experiments.tiny.estimator.train.milestones [10] lie at or after "
                                    "epochs = 10: the learning rate never decays there"]


def schema_keys_without_description(node: dict, path: str = "config") -> list[str]:
    """Keys a user sets (properties that are not blocks of further keys) with no description of their
    own; a key whose value is a ``$ref`` counts as described when the definition says what it means
    (``count`` only says "a positive integer": such a key needs its own)."""
    defs, missing = SCHEMA["$defs"], []

    def described(spec: dict) -> bool:
        ref = spec.get("$ref", "").rpartition("/")[2]
        return "description" in spec or (ref not in ("", "count") and described(defs[ref]))

    def walk(spec: dict, where: str) -> None:
        for key, child in spec.get("properties", {}).items():
            block = "properties" in child or isinstance(child.get("additionalProperties"), dict)
            if not block and not described(child):
                missing.append(f"{where}.{key}")
            walk(child, f"{where}.{key}")
        for sub in spec.get("oneOf", []) + spec.get("anyOf", []):
            walk(sub, where)
        for keyword, step in (("additionalProperties", "<name>"), ("items", "[]")):
            if isinstance(spec.get(keyword), dict):
                walk(spec[keyword], f"{where}.{step}")

    walk(node, path)
    for name, definition in defs.items():
        walk(definition, f"$defs.{name}")
    return missing


def test_every_key_of_the_schema_says_what_it_means():
    """README and docs/architecture.md send the reader to the schema for each key's meaning."""
    assert schema_keys_without_description(SCHEMA) == []
    assert schema_keys_without_description({"properties": {"every": {"$ref": "#/$defs/count"}}}) == ["config.every"]

"""dualrs.plan: the workflow's paths, reuse decisions and CLI arguments, without Snakemake (fast)."""
from __future__ import annotations

import copy
import dataclasses
import math
from functools import cache
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config, validate

from dualrs.config_checks import config_problems
from dualrs.plan import (
    Plan,
    PlanError,
    ablation_value,
    estimator_target_args,
    existing,
    existing_denoiser,
    expert_json,
    optim_args,
    refuse,
    schema_problems,
)
from pipeline import REPO, TINY

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
CONFIG = REPO / "config" / "config.yaml"


@cache
def _config_file(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def merged(*overlays: dict | Path) -> dict:
    """config/config.yaml with ``overlays`` (mappings or files) merged over it, as --configfile merges."""
    config = copy.deepcopy(_config_file(CONFIG))
    for overlay in overlays:
        update_config(config, copy.deepcopy(_config_file(overlay) if isinstance(overlay, Path) else overlay))
    return config


def plan(*overlays: dict | Path) -> Plan:
    """The plan the workflow builds: schema checks, Snakemake's defaults, cross-key checks."""
    config = merged(*overlays)
    assert schema_problems(config, [CONFIG, *(o for o in overlays if isinstance(o, Path))], SCHEMA) == []
    validate(config, str(SCHEMA))
    assert config_problems(config) == []
    return Plan(config)


def experiment(name: str, **settings) -> dict:
    return {"experiments": {name: settings}}


@pytest.fixture(scope="module")
def paper() -> Plan:
    return plan()


# ------------------------------------------------------------------ classifiers per round, sigma and sharing


def test_noise_trained_classifiers_are_one_per_sigma_and_finetuned_per_round(paper):
    assert paper.classifier_checkpoint("digits", 0, 0.25) == "results/digits/models/classifier_sigma0.25.safetensors"
    assert paper.classifier_checkpoint("digits", 0, 1.0) == "results/digits/models/classifier_sigma1.safetensors"
    assert paper.classifier_checkpoint("digits", 1, 0.5) == "results/digits/models/it1/classifier_sigma0.5.safetensors"
    # path wildcards (strings) give the same paths
    assert paper.classifier_checkpoint("digits", "1", "0.5") == paper.classifier_checkpoint("digits", 1, 0.5)
    assert paper.classifier_args("digits", 0) == (
        "--classifier 0.25=results/digits/models/classifier_sigma0.25.safetensors "
        "--classifier 0.5=results/digits/models/classifier_sigma0.5.safetensors "
        "--classifier 1=results/digits/models/classifier_sigma1.safetensors")


def test_one_noise_level_or_off_the_shelf_weights_share_one_classifier(paper):
    assert not paper.shared_classifier("digits")
    assert paper.shared_classifier("digits_dds") and paper.shared_classifier("cifar10")
    for sigma in (0.25, 1.0):
        assert (paper.classifier_checkpoint("digits_dds", 0, sigma)
                == "results/digits_dds/models/classifier_noise0.1.safetensors")
        models = "results/cifar10/models"
        assert paper.classifier_checkpoint("cifar10", 0, sigma) == f"{models}/classifier_pretrained.safetensors"
        assert paper.classifier_checkpoint("cifar10", 1, sigma) == f"{models}/it1/classifier_shared.safetensors"


def test_mixed_noise_shares_one_noise_trained_classifier_finetuned_once(paper):
    name = "digits16_contrast_shared"
    assert paper.shared_classifier(name)
    for sigma in paper.sigmas(name):
        assert paper.classifier_checkpoint(name, 0, sigma) == f"results/{name}/models/classifier_mixed.safetensors"
        assert paper.classifier_checkpoint(name, 1, sigma) == f"results/{name}/models/it1/classifier_shared.safetensors"
    assert paper.denoiser_input(name) == []


def test_products_are_the_classifiers_of_every_round_and_a_trained_denoiser(paper):
    assert paper.products("digits_dds") == {"results/digits_dds/models/classifier_noise0.1.safetensors",
                                            "results/digits_dds/models/denoiser"}
    assert paper.products("cifar10") == {"results/cifar10/models/classifier_pretrained.safetensors",
                                         "results/cifar10/models/it1/classifier_shared.safetensors"}
    assert len(paper.products("digits")) == 6


def test_denoiser_inputs_are_trained_here_or_must_exist(paper, tmp_path):
    assert paper.denoiser_input("digits") == [] and paper.denoiser_input("digits_dds") == [
        "results/digits_dds/models/denoiser"]
    with pytest.raises(PlanError) as error:
        paper.denoiser_input("cifar10")
    assert str(error.value) == (
        "config: experiments.cifar10.denoiser.path points to models/cifar10/improved_diffusion_50M, which does not "
        "exist. Place the file there or change the key (see the comments in config/config.yaml).")
    assert existing(str(tmp_path), "denoiser.path", "cifar10") == str(tmp_path)
    with pytest.raises(PlanError) as error:  # a folder, but no UNet in it: refused before any job, not at the first
        existing_denoiser(str(tmp_path), "denoiser.path", "cifar10")
    assert str(error.value) == (
        f"config: experiments.cifar10.denoiser.path points to {tmp_path}, which is not a denoiser directory: no UNet "
        f"config in {tmp_path}: expected {tmp_path / 'unet' / 'config.json'} or {tmp_path / 'config.json'}")
    for config in ("unet/config.json", "scheduler/scheduler_config.json"):
        (tmp_path / config).parent.mkdir()
        (tmp_path / config).write_text("{}")
    assert existing_denoiser(str(tmp_path), "denoiser.path", "cifar10") == str(tmp_path)


# ------------------------------------------------------------------ rounds and table rows


@pytest.mark.parametrize(("iterations", "retrain", "rows"), [
    (1, False, {"dual": "it0"}),
    (2, False, {"dual (off-the-shelf)": "it0", "dual (finetuned)": "finetuned_it1"}),
    (2, True, {"dual (off-the-shelf)": "it0", "dual (finetuned)": "finetuned_it1",
               "dual (finetuned, estimator retrained, round 1)": "it1"}),
    (3, True, {"dual (off-the-shelf)": "it0", "dual (finetuned)": "finetuned_it1",
               "dual (finetuned, round 2)": "finetuned_it2", "dual (finetuned, estimator retrained, round 1)": "it1",
               "dual (finetuned, estimator retrained, round 2)": "it2"}),
])
def test_dual_rows_per_round(iterations, retrain, rows):
    rounds = plan(experiment("digits16", iterations=iterations, retrain_estimator=retrain))
    assert rounds.dual_names("digits16") == rows
    assert list(rounds.estimator_rounds("digits16")) == (list(range(iterations)) if retrain else [0])


def test_report_rows_of_the_tiny_config():
    """Rows after the global ones (tests/test_workflow.py checks the same table end to end)."""
    tiny = plan(TINY)
    assert tiny.report_rows("tiny") == [
        ("--method", "expert dds-0.5", "results/tiny/router/certify/dds-0.5.tsv"),
        ("--method", "cascade (Multiscale, as published)", "results/tiny/certify/cascade_published.tsv"),
        ("--method", "cascade (union bound)", "results/tiny/certify/cascade_union_bound.tsv"),
        ("--dual", "dual (off-the-shelf)", "results/tiny/certify/dual/it0.tsv"),
        ("--dual", "dual (finetuned)", "results/tiny/certify/dual/finetuned_it1.tsv"),
        ("--dual", "dual (finetuned, estimator retrained, round 1)", "results/tiny/certify/dual/it1.tsv"),
        ("--dual", "router", "results/tiny/certify/router.tsv"),
    ]
    assert tiny.default_targets() == ["results/tables/tiny.csv", "results/tables/tiny_dds.csv"]


# ------------------------------------------------------------------ router experts that are global runs


def test_an_expert_that_is_a_global_run_reuses_its_certificates_and_labels(paper):
    noise, dds = paper.expert("digits", "noise-0.25"), paper.expert("digits", "dds-0.5")
    assert paper.global_twin("digits", noise) == 0.25 and paper.global_twin("digits", dds) is None
    assert paper.expert_table("digits", noise, "certify") == "results/digits/certify/global/sigma0.25.tsv"
    assert paper.expert_table("digits", noise, "labels") == "results/digits/labels/it0/sigma0.25.tsv"
    assert paper.expert_table("digits", dds, "certify") == "results/digits/router/certify/dds-0.5.tsv"
    assert [row for _, row, _ in paper.report_rows("digits")][0] == "expert dds-0.5"
    # another noise level or a denoiser makes another expert
    assert paper.global_twin("digits", {**noise, "sigma": 0.5}) is None
    assert paper.global_twin("digits", {**noise, "denoiser": "results/digits_dds/models/denoiser"}) is None


def test_router_labels_of_their_own_are_not_the_global_labels():
    tiny = plan(TINY)
    noise = tiny.expert("tiny", "noise-0.25")
    assert tiny.expert_table("tiny", noise, "labels") == "results/tiny/router/labels/noise-0.25.tsv"
    assert tiny.expert_table("tiny", noise, "certify") == "results/tiny/certify/global/sigma0.25.tsv"
    assert tiny.expert_settings("tiny", "labels")["n"] == 8 and tiny.expert_settings("tiny", "certify")["n"] == 64


def test_router_labels_drawn_as_the_global_labels_reuse_them_whatever_their_shards(paper):
    """digits's router.label is its label block with two shards: the noise experts' labels are the global
    runs' labels; the denoising expert's are split in two jobs."""
    noise = paper.expert("digits", "noise-1")
    assert paper.router_label("digits")["shards"] == 2 and paper.num_shards("digits", "router/labels") == 2
    assert paper.expert_table("digits", noise, "labels") == "results/digits/labels/it0/sigma1.tsv"
    fewer = plan(experiment("digits", router={"label": {"n0": 32, "n": 100, "alpha": 0.001, "shards": 2}}))
    assert fewer.expert_table("digits", noise, "labels") == "results/digits/router/labels/noise-1.tsv"


def test_expert_inputs_and_unknown_experts(paper):
    assert paper.expert_inputs("digits", "dds-0.5") == {
        "classifier": "results/digits_dds/models/classifier_noise0.1.safetensors",
        "denoiser": "results/digits_dds/models/denoiser"}
    with pytest.raises(PlanError, match="^experiment 'digits' has no router expert 'zzz'$"):
        paper.expert("digits", "zzz")
    assert expert_json(paper.expert("digits", "noise-1")) == (
        """'{"name": "noise-1", "sigma": 1.0, "classifier": "results/digits/models/classifier_sigma1.safetensors", """
        """"denoiser": null}'""")


def test_a_router_expert_that_no_experiment_builds_is_refused():
    spec = {"name": "x", "sigma": 0.5, "classifier": "results/digits/models/it1/classifier_sigma9.safetensors"}
    built = {"name": "y", "sigma": 0.5, "classifier": "results/digits16/models/classifier_sigma0.5.safetensors"}
    bad = plan(experiment("digits16", router={"experts": [spec, built]}))
    with pytest.raises(PlanError) as error:
        bad.check_router()
    assert str(error.value).startswith(
        "invalid configuration:\n  config: experiments.digits16.router.experts[0].classifier is "
        "results/digits/models/it1/classifier_sigma9.safetensors, which experiment 'digits' does not build; it builds ")
    plan().check_router()


# ------------------------------------------------------------------ Monte Carlo sampling and shards


def test_shards_of_each_merge_stage():
    tiny = plan(TINY, experiment("tiny", router={"label": {"shards": 3}}))
    assert tiny.num_shards("tiny", "labels/it1") == 2
    assert tiny.num_shards("tiny", "certify/global") == tiny.num_shards("tiny", "router/certify") == 2
    assert tiny.num_shards("tiny", "router/labels") == 3
    assert plan(TINY).num_shards("tiny", "router/labels") == 1  # the schema's default, not the label block's 2


def test_sampling_flags(paper):
    assert paper.sampling_args("cifar10", "certify", 3) == (
        "--n0 100 --n 10000 --batch-size 500 --every 1 --shard 3 --num-shards 8 --precision bf16")
    assert paper.ablated("digits", "n_label", "100").sampling_args("digits", "label", "0") == (
        "--n0 32 --n 100 --batch-size 1000 --every 1 --shard 0 --num-shards 1 --precision bf16")
    adaptive = plan(experiment("digits", precision="fp32", label={"radius_precision": 0.05}))
    assert adaptive.sampling_args("digits", "label", 1).endswith(
        "--shard 1 --num-shards 1 --precision fp32 --radius-precision 0.05")


# ------------------------------------------------------------------ CLI arguments of settings blocks


def test_data_and_training_arguments(paper):
    assert paper.data_args("imagenet") == (
        """--dataset imagenet --root data/imagenet --data-options '{"source": "/datasets/imagenet/val", """
        """"every": 100, "train_source": "/datasets/imagenet/train", "train_every": 50, "resize": 256, "crop": 224, """
        """"devkit": null, "num_classes": 1000}'""")
    assert paper.data_args("digits16") == (
        """--dataset digits --root data/digits --data-options '{"test_fraction": 0.3, "resolution": 16}'""")
    assert paper.data_args("digits16_contrast") == (
        """--dataset digits --root data/digits --data-options '{"test_fraction": 0.3, "resolution": 16, """
        """"contrast": [0.5, 1.0]}'""")
    assert optim_args(paper.experiment("imagenet")["finetune"]) == (
        "--epochs 1 --batch-size 32 --lr 2e-05 --weight-decay 0.0 --num-workers 0 --optimizer adam --gamma 0.5 "
        "--precision fp32 --micro-batch-size 16 --grad-checkpointing")
    assert optim_args(paper.experiment("cifar10")["estimator"]["train"]).endswith(
        "--optimizer adamw --gamma 0.5 --precision fp32 --milestones 30 60")
    assert estimator_target_args(paper.experiment("digits_dds")["estimator"]) == (
        "--temperature 0.25 --radius-weight strong --class-weight both --train-fraction 1.0")
    assert estimator_target_args(paper.experiment("imagenet")["estimator"]) == (
        "--radius-weight weak --class-weight both --train-fraction 1.0")


def test_sigma_e_and_radii(paper):
    assert paper.sigma_e("digits") == 0.5 and paper.sigma_e("cifar10") == 1.0
    assert paper.radii("imagenet") == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert paper.radii("digits") == paper.config["radii"]


# ------------------------------------------------------------------ ablations


@pytest.mark.parametrize(("ablation", "value", "spelling"), [
    ("lam", 0, "0"), ("lam", 40.0, "40"), ("labels", "hard", "hard"), ("n_label", 1000, "1000"),
    ("train_fraction", 0.2, "0.2"), ("alpha_beta", [0.0005, 0.0015], "0.0005_0.0015"),
    ("temperature", "plain", "plain"), ("temperature", 0.25, "0.25"),
    ("estimator_arch", "timm/resnet18", "timm-resnet18"), ("estimator_seed", 2, "2"), ("sigmas", [1.0, 0.25], "0.25_1"),
])
def test_ablation_values_are_spelled_in_paths(ablation, value, spelling):
    assert ablation_value(ablation, value) == spelling


def test_ablation_rows(paper):
    assert paper.ablation_row("cifar10", "alpha_beta", "0.00025_0.00075") == "alpha=0.00025, beta=0.00075"
    assert paper.ablation_row("cifar10", "sigmas", "0.25_1") == "sigmas={0.25, 1}"
    assert paper.ablation_row("cifar10", "estimator_arch", "cifar_resnet20") == "estimator_arch=cifar_resnet20"
    assert paper.ablation_row("cifar10", "lam", "10") == "lam=10"
    assert paper.ablation_values("cifar10", "temperature") == ["plain", "0.25", "0.1"]


def test_an_ablation_value_equal_to_the_experiments_setting_reuses_its_runs(paper):
    assert paper.ablation_estimator("cifar10", "lam", "40") == "results/cifar10/models/estimator_it0.safetensors"
    assert paper.ablation_certificates("cifar10", "lam", "40") == "results/cifar10/certify/dual/it0.tsv"
    assert paper.ablation_estimator("cifar10", "lam", "10") == "results/cifar10/ablations/lam/10/estimator.safetensors"
    assert paper.ablation_certificates("cifar10", "lam", "10") == "results/cifar10/ablations/lam/10/certify.tsv"
    # alpha_beta certifies the round-0 estimator anew, except at the experiment's own levels
    assert (paper.ablation_estimator("cifar10", "alpha_beta", "0.00025_0.00075")
            == "results/cifar10/models/estimator_it0.safetensors")
    assert paper.ablation_certificates("cifar10", "alpha_beta", "0.00025_0.00075") == (
        "results/cifar10/ablations/alpha_beta/0.00025_0.00075/certify.tsv")
    assert paper.ablation_certificates("cifar10", "alpha_beta", "0.0005_0.0005") == (
        "results/cifar10/certify/dual/it0.tsv")
    assert paper.ablated("cifar10", "alpha_beta", "0.00025_0.00075").experiment("cifar10")["certify"] == {
        **paper.experiment("cifar10")["certify"], "alpha": 0.00025, "beta": 0.00075}
    assert paper.ablation_labels("cifar10", "n_label", "1000") == [
        f"results/cifar10/ablations/n_label/1000/labels/sigma{s}.tsv" for s in ("0.25", "0.5", "1")]
    assert paper.ablation_labels("cifar10", "n_label", "100")[0] == "results/cifar10/labels/it0/sigma0.25.tsv"


def test_a_sigmas_ablation_uses_its_candidate_set(paper):
    labels = paper.ablation_labels("cifar10", "sigmas", "0.25_1")
    assert labels == ["results/cifar10/labels/it0/sigma0.25.tsv", "results/cifar10/labels/it0/sigma1.tsv"]
    assert paper.ablated("cifar10", "sigmas", "0.25_0.5").sigma_e("cifar10") == 0.5
    assert paper.ablated("digits", "sigmas", "0.25_0.5").sigma_e("digits") == 0.5  # digits sets sigma_e = 0.5
    assert paper.ablated("cifar10", "sigmas", "0.5_1").classifier_args("cifar10", 0) == (
        "--classifier 0.5=results/cifar10/models/classifier_pretrained.safetensors "
        "--classifier 1=results/cifar10/models/classifier_pretrained.safetensors")


def test_an_ablation_is_the_experiment_with_one_setting_overridden(paper):
    """Every other key of the experiment, and every other experiment, is the configuration's."""
    own = paper.experiment("cifar10")
    for ablation in paper.experiment("cifar10")["ablations"]:
        for value in paper.ablation_values("cifar10", ablation):
            ablated = paper.ablated("cifar10", ablation, value)
            changed = {key for key in own if ablated.experiment("cifar10")[key] != own[key]}
            changed |= {f"estimator.{key}" for key in own["estimator"]
                        if ablated.experiment("cifar10")["estimator"][key] != own["estimator"][key]}
            assert changed <= {"estimator", "label", "certify", "sigmas", f"estimator.{ablation}",
                               "estimator.arch", "estimator.options", "estimator.weights", "estimator.temperature"}
            assert (not changed) == paper.is_experiment_setting("cifar10", ablation, value), (ablation, value)
            assert ablated.experiment("imagenet") == paper.experiment("imagenet")
    assert paper.experiment("cifar10") == own  # the configuration's plan is untouched


def test_ablation_training_and_model_arguments(paper):
    def targets(ablation, value):
        return estimator_target_args(paper.ablated("cifar10", ablation, value).experiment("cifar10")["estimator"])

    assert targets("temperature", "plain") == "--radius-weight strong --class-weight both --train-fraction 1.0"
    assert targets("temperature", "0.1").startswith("--temperature 0.1 --radius-weight strong ")
    assert targets("labels", "hard").startswith("--hard-labels ")
    assert targets("train_fraction", "0.2").endswith(" --train-fraction 0.2")
    assert targets("class_weight", "none") == "--radius-weight strong --class-weight none --train-fraction 1.0"
    assert paper.ablated("cifar10", "lam", "10").experiment("cifar10")["estimator"]["lam"] == 10
    arch = paper.ablated("cifar10", "estimator_arch", "cifar_resnet20").experiment("cifar10")["estimator"]
    assert (arch["arch"], arch["options"], arch["weights"]) == ("cifar_resnet20", {}, None)
    assert paper.ablation_tables(["digits_dds", "cifar10"])[:2] == [
        "results/tables/ablations/cifar10_lam.csv", "results/tables/ablations/cifar10_labels.csv"]


def test_ablations_that_are_not_configured_or_not_spelled_are_refused(paper):
    with pytest.raises(PlanError, match=r"^config: experiments.digits_dds.ablations has no `lam` list$"):
        paper.ablation_values("digits_dds", "lam")
    with pytest.raises(PlanError, match=r"^config: experiments.cifar10.ablations.estimator_arch has no value spelled "
                                        r"'x'$"):
        paper.ablated("cifar10", "estimator_arch", "x")
    paper.check_ablations()
    same = plan(experiment("digits16", ablations={"sigmas": [[0.25, 0.5], [0.5, 0.25]]}))
    with pytest.raises(PlanError) as error:
        same.check_ablations()
    assert str(error.value) == ("config: experiments.digits16.ablations.sigmas has values that coincide in paths: "
                                "['0.25_0.5', '0.25_0.5']")


# ------------------------------------------------------------------ validation messages and warnings


def test_schema_problems_name_the_key_once_with_its_description():
    bad = merged(experiment("digits16", bogus=1, radii=[], label={"n": "1e4"}, certify={"alpha": math.nan}))
    problems = schema_problems(bad, [CONFIG], SCHEMA)
    assert problems[0] == "config: experiments.digits16.certify.alpha is nan: numbers must be finite"
    assert problems[1].startswith("config: experiments.digits16: unknown key(s) 'bogus'; allowed: ablations, ")
    assert problems[2].startswith("config: experiments.digits16.label.n: '1e4' is not of type 'integer' (YAML reads "
                                  "numbers like 1e4 as text: write 10000) (noise draws that bound its probability")
    assert problems[3].startswith("config: experiments.digits16.radii: [] should be non-empty (")
    assert len(problems) == 4
    with pytest.raises(PlanError) as error:
        refuse(problems[:2])
    assert str(error.value) == f"invalid configuration:\n  {problems[0]}\n  {problems[1]}"
    refuse([])


def test_schema_problems_read_the_config_files_and_make_whole_floats_counts(tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("seed: 1\nseed: 2\n")
    config = merged(experiment("digits16", label={"n": 1.0e4}))
    assert schema_problems(config, [CONFIG, twice], SCHEMA) == [
        f"config: {twice}:2: key 'seed' is given twice (also on line 1); YAML would keep only the last value"]
    assert type(config["experiments"]["digits16"]["label"]["n"]) is int


def test_a_sigma_e_below_the_largest_sigma_warns_of_the_cap(paper):
    assert paper.radius_cap_warnings() == [
        "config: experiments.digits.sigma_e = 0.5 is below max(sigmas) = 1: every dual radius is capped at R_sigma <= "
        "sigma_e * Phi^-1(beta^(1/n)) = 1.23 (certify n = 1000, beta = 0.001), while sigma = 1 alone can certify up "
        "to 2.46"]


def test_the_plan_is_frozen(paper):
    with pytest.raises(dataclasses.FrozenInstanceError):
        paper.config = {}


def test_an_estimator_seed_value_trains_only_the_estimator_under_that_seed(paper):
    """digits' estimator_seed ablation: seed 2 changes the estimator's seed and nothing else; seed 0, the config's,
    is the experiment's own estimator; estimator.seed, when set, is the experiment's own setting."""
    assert paper.estimator_seed("digits") == paper.config["seed"] == 0
    ablated = paper.ablated("digits", "estimator_seed", "2")
    assert ablated.estimator_seed("digits") == 2
    changed = ablated.experiment("digits")
    assert {**changed, "estimator": {**changed["estimator"], "seed": None}} == paper.experiment("digits")
    assert paper.is_experiment_setting("digits", "estimator_seed", "0")
    assert paper.ablation_estimator("digits", "estimator_seed", "0") == "results/digits/models/estimator_it0.safetensors"
    assert paper.ablation_estimator("digits", "estimator_seed", "2") == (
        "results/digits/ablations/estimator_seed/2/estimator.safetensors")
    assert paper.ablation_labels("digits", "estimator_seed", "2") == [
        f"results/digits/labels/it0/sigma{s}.tsv" for s in ("0.25", "0.5", "1")]
    seeded = ablated.ablated("digits", "estimator_seed", "1")
    assert seeded.own_setting("digits", "estimator_seed") == 1 and seeded.is_experiment_setting("digits", "estimator_seed", "1")


def test_a_label_precision_value_relabels_with_sequential_sampling(paper):
    """digits' label_precision ablation: 0.1 labels the training set anew with --radius-precision 0.1; fixed is
    the experiment's own fixed-n labelling and reuses its labels."""
    ablated = paper.ablated("digits", "label_precision", "0.1")
    assert ablated.sampling_args("digits", "label", 0).endswith(" --radius-precision 0.1")
    assert "--radius-precision" not in paper.sampling_args("digits", "label", 0)
    assert paper.ablation_labels("digits", "label_precision", "0.1") == [
        f"results/digits/ablations/label_precision/0.1/labels/sigma{s}.tsv" for s in ("0.25", "0.5", "1")]
    assert paper.ablated("digits", "label_precision", "fixed").experiment("digits") == paper.experiment("digits")
    assert paper.ablation_labels("digits", "label_precision", "fixed") == [
        f"results/digits/labels/it0/sigma{s}.tsv" for s in ("0.25", "0.5", "1")]

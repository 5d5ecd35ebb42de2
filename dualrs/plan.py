"""The workflow's plan of a configuration: its validation messages, path layout, reuse and CLI arguments.

``workflow/rules/common.smk`` and ``ablations_common.smk`` build one :class:`Plan` from the validated
configuration (the schema's defaults filled in by Snakemake) and hand its methods to the rules; here they
are plain functions of experiment names and values, so they are tested without Snakemake. A
:class:`PlanError` carries the message the workflow shows (as a ``WorkflowError``).
"""
from __future__ import annotations

import copy
import json
import math
import os
import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import jsonschema
import yaml

from dualrs.config_checks import (
    SAFE_LOADER,
    config_key,
    model_problems,
    number_spelling,
    numeric_text_hint,
    router_problems,
    sigma_spelling,
    whole_floats_to_int,
    yaml_problems,
)
from dualrs.denoiser_layout import denoiser_folders

#: The ablations an experiment may configure (experiments.<experiment>.ablations), in table order.
ABLATIONS = ("lam", "labels", "n_label", "label_precision", "train_fraction", "alpha_beta", "temperature",
             "radius_weight", "class_weight", "estimator_arch", "estimator_seed", "sigmas", "sigma_e")
#: Ablations that label the training set anew (n draws; fixed-n or sequential sampling) before training.
LABEL_ABLATIONS = ("n_label", "label_precision")
#: Ablations that train their own estimator (alpha_beta only certifies the experiment's anew).
ESTIMATOR_ABLATIONS = tuple(ablation for ablation in ABLATIONS if ablation != "alpha_beta")
#: ``dualrs certify-cascade --variant`` -> its row in the experiment's table.
CASCADE_ROWS = {"published": "cascade (Multiscale, as published)", "union_bound": "cascade (union bound)"}


def same_draws(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two sampling blocks give the same certificates: ``shards`` splits the inputs among jobs,
    and each input's noise is seeded by its index (dualrs.seeding), not by its shard."""
    return {k: v for k, v in a.items() if k != "shards"} == {k: v for k, v in b.items() if k != "shards"}


class PlanError(ValueError):
    """A configuration or a target the plan cannot serve; the message names the key or the target."""


def refuse(problems: list[str]) -> None:
    """One PlanError that lists every problem of a configuration, if there are any."""
    if problems:
        raise PlanError("invalid configuration:\n  " + "\n  ".join(problems))


# ------------------------------------------------------------------ schema validation messages


def nonfinite_numbers(node: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str, float]]:
    """(key, value) of every NaN or infinite number (YAML .nan, .inf), which the schema's bounds let through."""
    if isinstance(node, float) and not math.isfinite(node):
        yield config_key(path), node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from nonfinite_numbers(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from nonfinite_numbers(value, (*path, index))


def ref_chain(schema: Mapping[str, Any], node: Any) -> list[Any]:
    """``node`` and the schemas its $ref (a local "#/..." pointer) leads to, in order."""
    chain = [node]
    while isinstance(node, dict) and "$ref" in node:
        node = schema
        for name in chain[-1]["$ref"].removeprefix("#/").split("/"):
            node = node[name]
        chain.append(node)
    return chain


def key_description(schema: Mapping[str, Any], schema_path: Iterable[str | int]) -> str:
    """The schema's descriptions of the key an error is about, with those of the definitions it refers to."""
    node = schema
    for part in list(schema_path)[:-1]:
        node = next(n for n in ref_chain(schema, node) if isinstance(n, list) or part in n)[part]
    descriptions = [n["description"] for n in ref_chain(schema, node) if isinstance(n, dict) and "description" in n]
    return "; ".join(" ".join(d.split()) for d in descriptions)


def is_number(text: str) -> bool:
    """Whether ``text`` reads as a number (as YAML 1.2 would read 1e-3)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def schema_problem(schema: Mapping[str, Any], error: jsonschema.ValidationError) -> str:
    """One line naming the key, what is wrong with its value, and the key's description."""
    described = error  # a oneOf/anyOf key is described by itself, not by its alternatives
    if error.context:  # an alternative of the value's own type says what is wrong
        error = jsonschema.exceptions.best_match([e for e in error.context if e.validator != "type"] or error.context)
    where = f"config: {config_key(error.absolute_path)}"
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {allowed}"
    line = f"{where}: {error.message}"
    if error.validator == "type" and isinstance(error.instance, str) and is_number(error.instance):
        line += numeric_text_hint(error.instance, error.validator_value)
    description = key_description(schema, described.absolute_schema_path)
    return f"{line} ({description})" if description else line


def schema_problems(config: dict, configfiles: Iterable[str | Path], schema_path: str | os.PathLike[str]) -> list[str]:
    """Problems of the config files' YAML, non-finite numbers, then every rule of the schema, one line per
    problem naming the key (a value of the wrong type is one problem, not one per rule it then breaks).
    Whole-number floats of integer keys (n: 1.0e+4) become ints in ``config`` first."""
    problems = [f"config: {line}" for line in yaml_problems(configfiles)]
    problems += [f"config: {key} is {value}: numbers must be finite" for key, value in nonfinite_numbers(config)]
    with open(schema_path) as handle:
        schema = yaml.load(handle, Loader=SAFE_LOADER)
    whole_floats_to_int(config, schema)
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(part) for part in e.absolute_path])
    typed = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
    errors = [e for e in errors if e.validator == "type" or tuple(e.absolute_path) not in typed]
    return problems + [schema_problem(schema, error) for error in errors]


# ------------------------------------------------------------------ arguments of one settings block


def optim_args(settings: Mapping[str, Any], batch_flag: str = "--batch-size") -> str:
    """CLI optimiser arguments of a training block (classifier.train, estimator.train, finetune)."""
    args = f"--epochs {settings['epochs']} {batch_flag} {settings['batch_size']} --lr {settings['lr']}"
    args += f" --weight-decay {settings.get('weight_decay', 0.0)} --num-workers {settings.get('num_workers', 0)}"
    args += f" --optimizer {settings.get('optimizer', 'adam')} --gamma {settings.get('gamma', 0.5)}"
    args += f" --precision {settings.get('precision', 'fp32')}"
    if settings.get("micro_batch_size"):
        args += f" --micro-batch-size {settings['micro_batch_size']}"
    if settings.get("grad_checkpointing"):
        args += " --grad-checkpointing"
    milestones = settings.get("milestones", [])
    return args + (f" --milestones {' '.join(str(m) for m in milestones)}" if milestones else "")


def estimator_target_args(estimator: Mapping[str, Any]) -> str:
    """train-estimator's targets and loss weights of an ``estimator`` section: --temperature (absent: the
    paper's plain softmax of the radii), --hard-labels, --radius-weight, --class-weight, --train-fraction."""
    temperature = estimator["temperature"]
    args = f"--temperature {temperature} " if temperature is not None else ""
    args += "--hard-labels " if estimator["labels"] == "hard" else ""
    return (args + f"--radius-weight {estimator['radius_weight']} --class-weight {estimator['class_weight']} "
            f"--train-fraction {estimator['train_fraction']}")


def expert_json(spec: Mapping[str, Any]) -> str:
    """The CLI's --expert argument of one expert."""
    fields = {k: spec.get(k) for k in ("name", "sigma", "classifier", "denoiser")}
    return shlex.quote(json.dumps(fields))


def ablation_value(ablation: str, value: Any) -> str:
    """Path spelling of a configured value: 10, hard, 1000, 0.5, 0.0005_0.0015 ([alpha, beta]), plain,
    digits_mlp, timm-resnet18 (timm/resnet18), 0.25_1 (the candidate set [0.25, 1.0]), 1 (sigma_e 1.0).
    """
    if ablation == "alpha_beta":
        return "_".join(number_spelling(level) for level in value)
    if ablation == "sigmas":
        return "_".join(sigma_spelling(sigma) for sigma in sorted(value))
    if ablation == "sigma_e":
        return sigma_spelling(value)
    if ablation == "estimator_arch":
        return "-".join(Path(value).parts)
    if ablation in ("n_label", "estimator_seed") or isinstance(value, str):
        return str(value)
    return number_spelling(value)


def ablation_dir(name: str, ablation: str, value: str) -> str:
    return f"results/{name}/ablations/{ablation}/{value}"


def existing(path: str, key: str, name: str) -> str:
    """``path`` if it exists, else one error that names the config key and the path expected."""
    if not Path(path).exists():
        raise PlanError(f"config: experiments.{name}.{key} points to {path}, which does not exist. "
                        "Place the file there or change the key (see the comments in config/config.yaml).")
    return path


def existing_denoiser(path: str, key: str, name: str) -> str:
    """``path`` if it is a denoiser directory (:func:`~dualrs.denoiser_layout.denoiser_folders`), else one error
    that names the config key and what the folder lacks."""
    existing(path, key, name)
    try:
        denoiser_folders(path)
    except FileNotFoundError as error:
        raise PlanError(f"config: experiments.{name}.{key} points to {path}, which is not a denoiser directory: "
                        f"{error}") from None
    return path


def produced_or_existing(path: str, key: str, name: str, check: Callable[[str, str, str], str] = existing) -> str:
    """Pipeline products (under results/) are built by their rules; other paths must pass ``check``."""
    return path if str(path).startswith("results/") else check(path, key, name)


# ------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class Plan:
    """Paths, reuse decisions and CLI arguments of the jobs of ``config``, a configuration that passed
    :func:`schema_problems` and ``dualrs.config_checks.config_problems`` with the schema's defaults filled in.

    ``it`` (estimator round) and ``sigma`` may be given as path wildcards (strings): paths keep their
    spelling, as the rules that make them match it."""

    config: Mapping[str, Any]

    @property
    def experiments(self) -> Mapping[str, dict[str, Any]]:
        return self.config["experiments"]

    def experiment(self, name: str) -> dict[str, Any]:
        return self.experiments[name]

    # -------------------------------------------------------------- checks and warnings

    def radius_cap_warnings(self) -> list[str]:
        """sigma_e below max Sigma is legal, but R = min(R_sigma, R_c) and R_sigma <= sigma_e * Phi^-1(beta^(1/n))
        (all n estimator votes agreeing), which is below what the largest sigma can certify alone."""
        warnings = []
        for name, cfg in self.experiments.items():
            largest = max(cfg["sigmas"])
            if cfg["sigma_e"] is None or cfg["sigma_e"] >= largest:
                continue
            n, alpha, beta = cfg["certify"]["n"], cfg["certify"]["alpha"], cfg["certify"]["beta"]
            cap = cfg["sigma_e"] * NormalDist().inv_cdf(beta ** (1 / n))
            alone = largest * NormalDist().inv_cdf(alpha ** (1 / n))
            warnings.append(
                f"config: experiments.{name}.sigma_e = {cfg['sigma_e']:g} is below max(sigmas) = {largest:g}: "
                f"every dual radius is capped at R_sigma <= sigma_e * Phi^-1(beta^(1/n)) = {cap:.3g} "
                f"(certify n = {n}, beta = {beta:g}), while sigma = {largest:g} alone can certify up to {alone:.3g}")
        return warnings

    def check_router(self) -> None:
        """Router experts under results/ name checkpoints that some experiment builds (its :meth:`products`)."""
        refuse([p for name in self.experiments for p in router_problems(self.config, name, self.products)])

    def check_models(self, name: str) -> None:
        """The timm models and transformers classes of experiment ``name`` exist (imports timm or transformers:
        seconds)."""
        refuse(model_problems(name, self.experiment(name)))

    def check_ablations(self) -> None:
        """Ablation values must stay distinct once spelled in paths (a candidate set in any order is one set)."""
        for name, cfg in self.experiments.items():
            for ablation, values in cfg.get("ablations", {}).items():
                spelled = [ablation_value(ablation, v) for v in values]
                if len(set(spelled)) != len(spelled):
                    raise PlanError(f"config: experiments.{name}.ablations.{ablation} has values that coincide "
                                    f"in paths: {spelled}")

    # -------------------------------------------------------------- experiment settings

    def sigmas(self, name: str) -> list[float]:
        return sorted(float(s) for s in self.experiment(name)["sigmas"])

    def sigma_e(self, name: str) -> float:
        return self.experiment(name)["sigma_e"] or max(self.sigmas(name))

    def radii(self, name: str) -> list[float]:
        return self.experiment(name).get("radii", self.config["radii"])

    def ready(self, name: str) -> str:
        """The prepared dataset's marker file."""
        return f"data/{self.experiment(name)['data']}/READY"

    def data_args(self, name: str) -> str:
        """CLI arguments naming the prepared dataset and its options."""
        data = self.experiment(name)["data"]
        options = json.dumps({**self.config["data"].get(data, {}), **self.experiment(name)["data_options"]})
        return f"--dataset {data} --root data/{data} --data-options {shlex.quote(options)}"

    def denoiser_input(self, name: str) -> list[str]:
        """[] for noise-trained models; the diffusers UNet directory for denoised smoothing."""
        spec = self.experiment(name).get("denoiser")
        if spec is None:
            return []
        if "path" in spec:
            return [existing_denoiser(spec["path"], "denoiser.path", name)]
        return [f"results/{name}/models/denoiser"]

    # -------------------------------------------------------------- classifiers and rounds

    def shared_classifier(self, name: str) -> bool:
        """True when one classifier serves every sigma: off-the-shelf weights, one trained under a noise level
        drawn from Sigma per input (``mixed``), or one trained under one noise level (with a denoiser)."""
        cfg = self.experiment(name)["classifier"]
        return cfg["weights"] is not None or cfg["noise"] != "per_sigma"

    def classifier_checkpoint(self, name: str, it: int | str, sigma: float | str) -> str:
        """Checkpoint of the classifier for sigma in estimator round ``it`` (round k >= 1 is finetuned)."""
        cfg = self.experiment(name)["classifier"]
        if int(it) > 0 and self.shared_classifier(name):
            return f"results/{name}/models/it{it}/classifier_shared.safetensors"
        if int(it) > 0:
            return f"results/{name}/models/it{it}/classifier_sigma{sigma_spelling(sigma)}.safetensors"
        if cfg["weights"] is not None:
            return f"results/{name}/models/classifier_pretrained.safetensors"
        if cfg["noise"] == "per_sigma":
            return f"results/{name}/models/classifier_sigma{sigma_spelling(sigma)}.safetensors"
        if cfg["noise"] == "mixed":
            return f"results/{name}/models/classifier_mixed.safetensors"
        return f"results/{name}/models/classifier_noise{sigma_spelling(cfg['noise'])}.safetensors"

    def classifier_args(self, name: str, it: int | str) -> str:
        return " ".join(f"--classifier {sigma_spelling(s)}={self.classifier_checkpoint(name, it, s)}"
                        for s in self.sigmas(name))

    def products(self, name: str) -> set[str]:
        """Classifier checkpoints and the trained denoiser experiment ``name`` builds (router experts may use them)."""
        paths = {self.classifier_checkpoint(name, it, s)
                 for it in range(self.experiment(name)["iterations"]) for s in self.sigmas(name)}
        if "train" in self.experiment(name).get("denoiser", {}):
            paths.add(f"results/{name}/models/denoiser")
        return paths

    def estimator_rounds(self, name: str) -> range:
        """Rounds whose estimator is trained: only round 0 unless retrain_estimator (Sun et al., Sec. 5.2)."""
        cfg = self.experiment(name)
        return range(cfg["iterations"]) if cfg["retrain_estimator"] else range(1)

    # -------------------------------------------------------------- Monte Carlo sampling

    def num_shards(self, name: str, stage: str) -> int:
        """Shard count of a sharded stage (labels/it<k>, router/labels, certify/..., router/certify)."""
        if stage == "router/labels":
            return self.router_label(name)["shards"]
        return self.experiment(name)["label" if stage.startswith("labels") else "certify"]["shards"]

    def sampling_flags(self, name: str, settings: Mapping[str, Any], shard: int | str) -> str:
        """CLI Monte Carlo flags of a sampling block (n0, n, every, shards), the job's
        ``shard`` and the experiment's inference precision; --radius-precision where the block sets
        radius_precision (label blocks only: config_checks refuses it in certify)."""
        precision = settings.get("radius_precision")
        adaptive = "" if precision is None else f" --radius-precision {precision}"
        cfg = self.experiment(name)
        return (f"--n0 {settings['n0']} --n {settings['n']} --batch-size {cfg['batch_size']} "
                f"--every {settings['every']} --shard {shard} --num-shards {settings['shards']} "
                f"--precision {cfg.get('precision', 'bf16')}{adaptive}")

    def sampling_args(self, name: str, stage: str, shard: int | str) -> str:
        """CLI Monte Carlo settings of ``stage`` (label / certify) and the job's shard."""
        return self.sampling_flags(name, self.experiment(name)[stage], shard)

    # -------------------------------------------------------------- router experts

    def router_experts(self, name: str) -> list[dict[str, Any]]:
        """The experiment's router experts (config order = the router's class order); [] without a router."""
        return self.experiment(name).get("router", {}).get("experts", [])

    def expert(self, name: str, expert: str) -> dict[str, Any]:
        for spec in self.router_experts(name):
            if spec["name"] == expert:
                return spec
        raise PlanError(f"experiment {name!r} has no router expert {expert!r}")

    def expert_inputs(self, name: str, expert: str) -> dict[str, str]:
        """The expert's classifier (and denoiser): built by the pipeline, or existing files."""
        spec = self.expert(name, expert)
        index = [e["name"] for e in self.router_experts(name)].index(spec["name"])
        where = f"router.experts[{index}]"
        inputs = {"classifier": produced_or_existing(spec["classifier"], f"{where}.classifier", name)}
        if spec.get("denoiser"):
            inputs["denoiser"] = produced_or_existing(spec["denoiser"], f"{where}.denoiser", name, existing_denoiser)
        return inputs

    def router_label(self, name: str) -> dict[str, Any]:
        """Sampling of the experts' training labels: router.label, else the experiment's label block."""
        return self.experiment(name)["router"].get("label") or self.experiment(name)["label"]

    def expert_settings(self, name: str, split: str) -> dict[str, Any]:
        """Monte Carlo settings of an expert's job: router_label on the training split, certify on test."""
        return self.router_label(name) if split == "labels" else self.experiment(name)["certify"]

    def global_twin(self, name: str, spec: Mapping[str, Any]) -> float | None:
        """The round-0 sigma of this experiment whose expert is ``spec`` (same checkpoint, noise level and
        denoiser), or None: such an expert's certificates are the global run's."""
        denoiser = self.experiment(name).get("denoiser")
        own_denoiser = None if denoiser is None else denoiser.get("path", f"results/{name}/models/denoiser")
        for sigma in self.sigmas(name):
            if (float(spec["sigma"]) == sigma and spec["classifier"] == self.classifier_checkpoint(name, 0, sigma)
                    and spec.get("denoiser") == own_denoiser):
                return sigma
        return None

    def expert_table(self, name: str, spec: Mapping[str, Any], split: str) -> str:
        """Certificates of one router expert on the training split (``labels``) or the test split (``certify``)."""
        twin = self.global_twin(name, spec)
        if twin is not None and split == "certify":
            return f"results/{name}/certify/global/sigma{sigma_spelling(twin)}.tsv"
        if twin is not None and same_draws(self.router_label(name), self.experiment(name)["label"]):
            return f"results/{name}/labels/it0/sigma{sigma_spelling(twin)}.tsv"
        return f"results/{name}/router/{split}/{spec['name']}.tsv"

    # -------------------------------------------------------------- tables

    def dual_names(self, name: str) -> dict[str, str]:
        """Report row name -> certificate stem under certify/dual/ of each (estimator, classifiers) pair.

        ``it<k>``: estimator and classifiers of round k; ``finetuned_it<k>``: round k-1's estimator with the
        classifiers finetuned under it (round 1 is the paper's headline row, Sun et al., Table 1).
        """
        rounds = self.experiment(name)["iterations"]
        if rounds == 1:
            return {"dual": "it0"}
        names = {"dual (off-the-shelf)": "it0"}
        for it in range(1, rounds):
            names["dual (finetuned)" if it == 1 else f"dual (finetuned, round {it})"] = f"finetuned_it{it}"
        for it in self.estimator_rounds(name)[1:]:
            names[f"dual (finetuned, estimator retrained, round {it})"] = f"it{it}"
        return names

    def report_rows(self, name: str) -> list[tuple[str, str, str]]:
        """(flag, row name, certificate TSV) of every row of the experiment's table after the global ones;
        an expert that is one of the global runs has no row of its own."""
        rows = [("--method", f"expert {e['name']}", self.expert_table(name, e, "certify"))
                for e in self.router_experts(name) if self.global_twin(name, e) is None]
        rows += [("--method", CASCADE_ROWS[v], f"results/{name}/certify/cascade_{v}.tsv")
                 for v in self.experiment(name)["cascade"]["variants"]]
        rows += [("--dual", row, f"results/{name}/certify/dual/{stem}.tsv")
                 for row, stem in self.dual_names(name).items()]
        if self.router_experts(name):
            rows.append(("--dual", "router", f"results/{name}/certify/router.tsv"))
        return rows

    def default_targets(self) -> list[str]:
        return [f"results/tables/{name}.csv" for name in self.config["default_targets"]]

    # -------------------------------------------------------------- ablations

    def ablation_setting(self, name: str, ablation: str, value: str) -> Any:
        """The configured value of an ablation whose path spelling is ``value``."""
        for setting in self.experiment(name)["ablations"][ablation]:
            if ablation_value(ablation, setting) == value:
                return setting
        raise PlanError(f"config: experiments.{name}.ablations.{ablation} has no value spelled {value!r}")

    def ablation_row(self, name: str, ablation: str, value: str) -> str:
        """Table row of a path value: lam=10, labels=hard, alpha=0.0005, beta=0.0015, estimator_arch=timm/resnet18,
        sigmas={0.25, 1}."""
        if ablation == "alpha_beta":
            alpha, beta = value.split("_")
            return f"alpha={alpha}, beta={beta}"
        if ablation == "sigmas":
            return "sigmas={" + ", ".join(value.split("_")) + "}"
        if ablation == "estimator_arch":
            return f"{ablation}={self.ablation_setting(name, ablation, value)}"
        return f"{ablation}={value}"

    def ablation_values(self, name: str, ablation: str) -> list[str]:
        """Path values of one configured ablation; one error naming the key when it is not configured."""
        settings = self.experiment(name).get("ablations", {})
        if ablation not in settings:
            raise PlanError(f"config: experiments.{name}.ablations has no `{ablation}` list")
        return [ablation_value(ablation, v) for v in settings[ablation]]

    def own_setting(self, name: str, ablation: str) -> Any:
        """The experiment's own setting of the ablated quantity, as a configured value would give it."""
        cfg = self.experiment(name)
        estimator = cfg["estimator"]
        temperature = estimator["temperature"]
        return {
            "lam": estimator["lam"],
            "labels": estimator["labels"],
            "n_label": cfg["label"]["n"],
            "label_precision": cfg["label"].get("radius_precision") or "fixed",
            "train_fraction": estimator["train_fraction"],
            "alpha_beta": [cfg["certify"]["alpha"], cfg["certify"]["beta"]],
            "temperature": "plain" if temperature is None else temperature,
            "radius_weight": estimator["radius_weight"],
            "class_weight": estimator["class_weight"],
            "estimator_arch": estimator["arch"],
            "estimator_seed": self.estimator_seed(name),
            "sigmas": cfg["sigmas"],
            "sigma_e": self.sigma_e(name),
        }[ablation]

    def estimator_seed(self, name: str) -> int:
        """The seed of the experiment's estimator training: estimator.seed, else the config's seed."""
        seed = self.experiment(name)["estimator"].get("seed")
        return int(self.config["seed"] if seed is None else seed)

    def is_experiment_setting(self, name: str, ablation: str, value: str) -> bool:
        """Whether the ablation value spelled ``value`` is the experiment's own setting."""
        return value == ablation_value(ablation, self.own_setting(name, ablation))

    def ablated(self, name: str, ablation: str, value: str) -> Plan:
        """The plan with experiment ``name``'s ablated setting set to the value spelled ``value``: the ablation
        jobs are the experiment's round-0 jobs under this plan (another architecture starts from its builder's
        defaults, without the experiment's weights; another candidate set keeps sigma_e, else takes its max)."""
        setting = self.ablation_setting(name, ablation, value)
        cfg = copy.deepcopy(self.experiment(name))
        estimator = cfg["estimator"]
        if ablation == "n_label":
            cfg["label"]["n"] = setting
        elif ablation == "label_precision" and setting == "fixed":
            cfg["label"].pop("radius_precision", None)
        elif ablation == "label_precision":
            cfg["label"]["radius_precision"] = setting
        elif ablation == "alpha_beta":
            cfg["certify"]["alpha"], cfg["certify"]["beta"] = setting
        elif ablation == "sigmas":
            cfg["sigmas"] = sorted(setting)
        elif ablation == "sigma_e":
            cfg["sigma_e"] = setting
        elif ablation == "estimator_arch":
            estimator.update(arch=setting, options={}, weights=None)
        elif ablation == "estimator_seed":
            estimator["seed"] = setting
        elif ablation == "temperature":
            estimator["temperature"] = None if setting == "plain" else setting
        else:  # lam, labels, train_fraction, radius_weight, class_weight: estimator keys of the same name
            estimator[ablation] = setting
        return Plan({**self.config, "experiments": {**self.experiments, name: cfg}})

    def ablation_labels(self, name: str, ablation: str, value: str) -> list[str]:
        """Per-sigma label tables the estimator of this ablation value is trained on: its own for another
        n_label or label_precision, else the experiment's round-0 labels of the value's candidate sigmas."""
        sigmas = self.ablated(name, ablation, value).sigmas(name)
        if ablation in LABEL_ABLATIONS and not self.is_experiment_setting(name, ablation, value):
            return [f"{ablation_dir(name, ablation, value)}/labels/sigma{sigma_spelling(s)}.tsv" for s in sigmas]
        return [f"results/{name}/labels/it0/sigma{sigma_spelling(s)}.tsv" for s in sigmas]

    def ablation_estimator(self, name: str, ablation: str, value: str) -> str:
        """The estimator an ablation value certifies with: the experiment's round-0 one where nothing it is
        trained from changes."""
        if ablation == "alpha_beta" or self.is_experiment_setting(name, ablation, value):
            return f"results/{name}/models/estimator_it0.safetensors"
        return f"{ablation_dir(name, ablation, value)}/estimator.safetensors"

    def ablation_certificates(self, name: str, ablation: str, value: str) -> str:
        """The certificates of an ablation value: the experiment's round-0 dual ones for its own setting."""
        if self.is_experiment_setting(name, ablation, value):
            return self.ablation_reference(name)
        return f"{ablation_dir(name, ablation, value)}/certify.tsv"

    @staticmethod
    def ablation_reference(name: str) -> str:
        """The experiment's round-0 dual RS certificates, which every ablation row is compared with."""
        return f"results/{name}/certify/dual/it0.tsv"

    def ablation_tables(self, names: Iterable[str]) -> list[str]:
        """Every configured ablation table of the given experiments."""
        return [f"results/tables/ablations/{name}_{ablation}.csv"
                for name in names for ablation in self.experiment(name).get("ablations", {})]

# Configuration: schema validation, consistency checks, path helpers and target lists.
import functools
import json
import math
import shlex
from pathlib import Path
from statistics import NormalDist

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

from dualrs.config_checks import (
    SIGMA_PATTERN,
    config_key,
    config_problems,
    config_warnings,
    model_problems,
    numeric_text_hint,
    router_problems,
    sigma_spelling,
    whole_floats_to_int,
    yaml_problems,
)


def nonfinite_numbers(node, path=()):
    """(key, value) of every NaN or infinite number (YAML .nan, .inf), which the schema's bounds let through."""
    if isinstance(node, float) and not math.isfinite(node):
        yield config_key(path), node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from nonfinite_numbers(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from nonfinite_numbers(value, (*path, index))


def ref_chain(schema, node):
    """``node`` and the schemas its $ref (a local "#/..." pointer) leads to, in order."""
    chain = [node]
    while isinstance(node, dict) and "$ref" in node:
        node = schema
        for name in chain[-1]["$ref"].removeprefix("#/").split("/"):
            node = node[name]
        chain.append(node)
    return chain


def key_description(schema, schema_path):
    """The schema's descriptions of the key an error is about, with those of the definitions it refers to."""
    node = schema
    for part in list(schema_path)[:-1]:
        node = next(
            n for n in ref_chain(schema, node) if isinstance(n, list) or part in n
        )[part]
    descriptions = [
        n["description"]
        for n in ref_chain(schema, node)
        if isinstance(n, dict) and "description" in n
    ]
    return "; ".join(" ".join(d.split()) for d in descriptions)


def is_number(text):
    """Whether ``text`` reads as a number (as YAML 1.2 would read 1e-3)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def schema_problem(schema, error):
    """One line naming the key, what is wrong with its value, and the key's description."""
    described = (
        error  # a oneOf/anyOf key is described by itself, not by its alternatives
    )
    if error.context:  # an alternative of the value's own type says what is wrong
        error = jsonschema.exceptions.best_match(
            [e for e in error.context if e.validator != "type"] or error.context
        )
    where = f"config: {config_key(error.absolute_path)}"
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {allowed}"
    line = f"{where}: {error.message}"
    if (
        error.validator == "type"
        and isinstance(error.instance, str)
        and is_number(error.instance)
    ):
        line += numeric_text_hint(error.instance, error.validator_value)
    description = key_description(schema, described.absolute_schema_path)
    return f"{line} ({description})" if description else line


def validate_config(config):
    """Every rule of the schema, one line per problem naming the key; then Snakemake's validation,
    which fills in the defaults, and the cross-key rules (dualrs.config_checks). Whole-number floats
    of integer keys (n: 1.0e+4) become ints first."""
    problems = [f"config: {line}" for line in yaml_problems(workflow.configfiles)]
    problems += [
        f"config: {key} is {value}: numbers must be finite"
        for key, value in nonfinite_numbers(config)
    ]
    with open(workflow.source_path("../schemas/config.schema.yaml")) as handle:
        schema = yaml.safe_load(handle)
    whole_floats_to_int(config, schema)
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(
        validator.iter_errors(config),
        key=lambda e: [str(part) for part in e.absolute_path],
    )
    typed = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
    errors = [  # a value of the wrong type is one problem, not one per rule it then breaks
        e
        for e in errors
        if e.validator == "type" or tuple(e.absolute_path) not in typed
    ]
    problems += [schema_problem(schema, error) for error in errors]
    if problems:
        raise WorkflowError("invalid configuration:\n  " + "\n  ".join(problems))
    validate(config, "../schemas/config.schema.yaml")
    problems = config_problems(config)
    if problems:
        raise WorkflowError("invalid configuration:\n  " + "\n  ".join(problems))
    for warning in config_warnings(config):
        logger.warning(warning)


validate_config(config)

EXPERIMENTS = config["experiments"]


wildcard_constraints:
    experiment="|".join(EXPERIMENTS),
    data="digits|cifar10|imagenet",
    sigma=SIGMA_PATTERN,
    it=r"[0-9]+",
    shard=r"[0-9]+",
    expert=r"[A-Za-z0-9_.=-]+",


def warn_capped_radii(name, cfg):
    """sigma_e below max Sigma is legal, but R = min(R_sigma, R_c) and R_sigma <= sigma_e * Phi^-1(beta^(1/n))
    (all n estimator votes agreeing), which is below what the largest sigma can certify alone.
    """
    largest = max(cfg["sigmas"])
    if cfg["sigma_e"] is None or cfg["sigma_e"] >= largest:
        return
    n, alpha, beta = (
        cfg["certify"]["n"],
        cfg["certify"]["alpha"],
        cfg["certify"]["beta"],
    )
    cap = cfg["sigma_e"] * NormalDist().inv_cdf(beta ** (1 / n))
    alone = largest * NormalDist().inv_cdf(alpha ** (1 / n))
    logger.warning(
        f"config: experiments.{name}.sigma_e = {cfg['sigma_e']:g} is below max(sigmas) = {largest:g}: "
        f"every dual radius is capped at R_sigma <= sigma_e * Phi^-1(beta^(1/n)) = {cap:.3g} "
        f"(certify n = {n}, beta = {beta:g}), while sigma = {largest:g} alone can certify up to {alone:.3g}"
    )


def fmt(sigma):
    """Spelling of a sigma in paths (0.25, 0.5, 1): the one the configuration was checked with."""
    return sigma_spelling(sigma)


for _name, _cfg in EXPERIMENTS.items():
    warn_capped_radii(_name, _cfg)


def exp(wildcards):
    return EXPERIMENTS[wildcards.experiment]


def sigmas(name):
    return sorted(float(s) for s in EXPERIMENTS[name]["sigmas"])


def sigma_e(name):
    return EXPERIMENTS[name]["sigma_e"] or max(sigmas(name))


def radii(name):
    return EXPERIMENTS[name].get("radii", config["radii"])


@functools.cache
def check_models(name):
    """The timm models and transformers classes of experiment ``name`` exist (checked once, when its
    jobs are planned: importing timm or transformers takes seconds)."""
    problems = model_problems(name, EXPERIMENTS[name])
    if problems:
        raise WorkflowError("invalid configuration:\n  " + "\n  ".join(problems))


def ready(wildcards):
    check_models(wildcards.experiment)
    return f"data/{exp(wildcards)['data']}/READY"


def data_args(wildcards):
    """CLI arguments naming the prepared dataset and its options."""
    data = exp(wildcards)["data"]
    options = json.dumps(
        {**config["data"].get(data, {}), **exp(wildcards)["data_options"]}
    )
    return f"--dataset {data} --root data/{data} --data-options {shlex.quote(options)}"


def optim_args(settings, batch_flag="--batch-size"):
    args = f"--epochs {settings['epochs']} {batch_flag} {settings['batch_size']} --lr {settings['lr']}"
    args += f" --weight-decay {settings.get('weight_decay', 0.0)} --num-workers {settings.get('num_workers', 0)}"
    args += f" --optimizer {settings.get('optimizer', 'adam')} --gamma {settings.get('gamma', 0.5)}"
    args += f" --precision {settings.get('precision', 'fp32')}"
    if settings.get("micro_batch_size"):
        args += f" --micro-batch-size {settings['micro_batch_size']}"
    if settings.get("grad_checkpointing"):
        args += " --grad-checkpointing"
    milestones = settings.get("milestones", [])
    return args + (
        f" --milestones {' '.join(str(m) for m in milestones)}" if milestones else ""
    )


def existing(path, key, name):
    """``path`` if it exists, else one error that names the config key and the path expected."""
    if not Path(path).exists():
        raise WorkflowError(
            f"config: experiments.{name}.{key} points to {path}, which does not exist. "
            "Place the file there or change the key (see the comments in config/config.yaml)."
        )
    return path


def denoiser_input(wildcards):
    """[] for noise-trained models; the diffusers UNet directory for denoised smoothing."""
    name = wildcards.experiment
    spec = EXPERIMENTS[name].get("denoiser")
    if spec is None:
        return []
    if "path" in spec:
        return [existing(spec["path"], "denoiser.path", name)]
    return [f"results/{name}/models/denoiser"]


def denoiser_arg(wildcards, input):
    return f"--denoiser {input.denoiser}" if input.denoiser else ""


def shared_classifier(name):
    """True when one classifier serves every sigma (off-the-shelf weights or one noise level, with a denoiser)."""
    cfg = EXPERIMENTS[name]["classifier"]
    return cfg["weights"] is not None or cfg["noise"] != "per_sigma"


def classifier_checkpoint(name, it, sigma):
    """Checkpoint of the classifier for sigma in estimator round ``it`` (round k >= 1 is finetuned)."""
    cfg = EXPERIMENTS[name]["classifier"]
    if int(it) > 0 and shared_classifier(name):
        return f"results/{name}/models/it{it}/classifier_shared.safetensors"
    if int(it) > 0:
        return f"results/{name}/models/it{it}/classifier_sigma{fmt(sigma)}.safetensors"
    if cfg["weights"] is not None:
        return f"results/{name}/models/classifier_pretrained.safetensors"
    if cfg["noise"] == "per_sigma":
        return f"results/{name}/models/classifier_sigma{fmt(sigma)}.safetensors"
    return f"results/{name}/models/classifier_noise{fmt(cfg['noise'])}.safetensors"


def classifier_args(name, it):
    return " ".join(
        f"--classifier {fmt(s)}={classifier_checkpoint(name, it, s)}"
        for s in sigmas(name)
    )


def products(name):
    """Classifier checkpoints and the trained denoiser experiment ``name`` builds (router experts may use them)."""
    paths = {
        classifier_checkpoint(name, it, s)
        for it in range(EXPERIMENTS[name]["iterations"])
        for s in sigmas(name)
    }
    if "train" in EXPERIMENTS[name].get("denoiser", {}):
        paths.add(f"results/{name}/models/denoiser")
    return paths


_problems = [p for name in EXPERIMENTS for p in router_problems(config, name, products)]
if _problems:
    raise WorkflowError("invalid configuration:\n  " + "\n  ".join(_problems))


def num_shards(name, stage):
    """Shard count of a merge_shards stage (labels/it<k>, router/labels, certify/..., router/certify)."""
    cfg = EXPERIMENTS[name]
    if stage == "router/labels":
        return router_label(name)["shards"]
    return cfg["label" if stage.startswith("labels") else "certify"]["shards"]


def sampling_flags(wildcards, settings, n=None):
    """CLI Monte Carlo flags of a sampling block (n0, n, every, shards; ``n`` overrides its n), this
    job's shard and the experiment's inference precision; --radius-precision where the block sets
    radius_precision (label blocks only: config_checks refuses it in certify)."""
    precision = settings.get("radius_precision")
    adaptive = "" if precision is None else f" --radius-precision {precision}"
    return (
        f"--n0 {settings['n0']} --n {n or settings['n']} --batch-size {exp(wildcards)['batch_size']} "
        f"--every {settings['every']} --shard {wildcards.shard} --num-shards {settings['shards']} "
        f"--precision {exp(wildcards).get('precision', 'bf16')}{adaptive}"
    )


def sampling_args(wildcards, stage):
    """CLI Monte Carlo settings of ``stage`` (label / certify) and this job's shard."""
    return sampling_flags(wildcards, exp(wildcards)[stage])


def estimator_target_args(estimator):
    """--temperature (absent: the paper's plain softmax of the radii) and --radius-weight of train-estimator."""
    temperature = estimator.get("temperature")
    args = f"--temperature {temperature} " if temperature is not None else ""
    return args + f"--radius-weight {estimator.get('radius_weight', 'strong')}"


def estimator_rounds(name):
    """Rounds whose estimator is trained: only round 0 unless retrain_estimator (Sun et al., Sec. 5.2)."""
    cfg = EXPERIMENTS[name]
    return range(cfg["iterations"]) if cfg["retrain_estimator"] else range(1)


def dual_names(name):
    """Report row name -> certificate stem under certify/dual/ of each (estimator, classifiers) pair.

    ``it<k>``: estimator and classifiers of round k; ``finetuned_it<k>``: round k-1's estimator with the
    classifiers finetuned under it (round 1 is the paper's headline row, Sun et al., Table 1).
    """
    rounds = EXPERIMENTS[name]["iterations"]
    if rounds == 1:
        return {"dual": "it0"}
    names = {"dual (off-the-shelf)": "it0"}
    for it in range(1, rounds):
        names["dual (finetuned)" if it == 1 else f"dual (finetuned, round {it})"] = (
            f"finetuned_it{it}"
        )
    for it in estimator_rounds(name)[1:]:
        names[f"dual (finetuned, estimator retrained, round {it})"] = f"it{it}"
    return names


def gpu(wildcards):
    return exp(wildcards)["resources"]["gpu"]


def mem_mb(wildcards):
    return exp(wildcards)["resources"]["mem_mb"]


def runtime(wildcards, attempt):
    """Minutes per job, times the attempt: a job retried after its time limit resumes from its
    ``.partial`` table with more time (the Slurm profile's ``retries``)."""
    return exp(wildcards)["resources"]["runtime"] * attempt


def table_outputs(name):
    return [f"results/tables/{name}.{ext}" for ext in ("csv", "md", "tex")]


def default_targets():
    return [f"results/tables/{name}.csv" for name in config["default_targets"]]


def router_experts(name):
    """The experiment's router experts (config order = the router's class order); [] without a router."""
    return EXPERIMENTS[name].get("router", {}).get("experts", [])


def expert(wildcards):
    for spec in router_experts(wildcards.experiment):
        if spec["name"] == wildcards.expert:
            return spec
    raise WorkflowError(
        f"experiment {wildcards.experiment!r} has no router expert {wildcards.expert!r}"
    )


def produced_or_existing(path, key, name):
    """Pipeline products (under results/) are built by their rules; other paths must exist."""
    return path if str(path).startswith("results/") else existing(path, key, name)


def expert_inputs(wildcards):
    spec, name = expert(wildcards), wildcards.experiment
    index = [e["name"] for e in router_experts(name)].index(spec["name"])
    where = f"router.experts[{index}]"
    inputs = {
        "classifier": produced_or_existing(
            spec["classifier"], f"{where}.classifier", name
        )
    }
    if spec.get("denoiser"):
        inputs["denoiser"] = produced_or_existing(
            spec["denoiser"], f"{where}.denoiser", name
        )
    return inputs


def expert_json(spec):
    """The CLI's --expert argument of one expert."""
    fields = {k: spec.get(k) for k in ("name", "sigma", "classifier", "denoiser")}
    return shlex.quote(json.dumps(fields))


def router_label(name):
    """Sampling of the experts' training labels: router.label, else the experiment's label block."""
    return EXPERIMENTS[name]["router"].get("label") or EXPERIMENTS[name]["label"]


def expert_settings(wildcards):
    """Monte Carlo settings of an expert's job: router_label on the training split, certify on test."""
    return (
        router_label(wildcards.experiment)
        if wildcards.split == "labels"
        else exp(wildcards)["certify"]
    )


def expert_sampling_args(wildcards):
    return sampling_flags(wildcards, expert_settings(wildcards))


def global_twin(name, spec):
    """The round-0 sigma of this experiment whose expert is ``spec`` (same checkpoint, noise level and
    denoiser), or None: such an expert's certificates are the global run's."""
    denoiser = EXPERIMENTS[name].get("denoiser")
    own_denoiser = (
        None
        if denoiser is None
        else denoiser.get("path", f"results/{name}/models/denoiser")
    )
    for sigma in sigmas(name):
        if (
            float(spec["sigma"]) == sigma
            and spec["classifier"] == classifier_checkpoint(name, 0, sigma)
            and spec.get("denoiser") == own_denoiser
        ):
            return sigma
    return None


def expert_table(name, spec, split):
    """Certificates of one router expert on the training split (``labels``) or the test split (``certify``)."""
    twin = global_twin(name, spec)
    if twin is not None and split == "certify":
        return f"results/{name}/certify/global/sigma{fmt(twin)}.tsv"
    if twin is not None and not EXPERIMENTS[name]["router"].get("label"):
        return f"results/{name}/labels/it0/sigma{fmt(twin)}.tsv"
    return f"results/{name}/router/{split}/{spec['name']}.tsv"


CASCADE_ROWS = {
    "published": "cascade (Multiscale, as published)",
    "union_bound": "cascade (union bound)",
}
CASCADE_VARIANTS = "|".join(CASCADE_ROWS)  # dualrs certify-cascade --variant


def report_rows(name):
    """(flag, row name, certificate TSV) of every row of the experiment's table after the global ones;
    an expert that is one of the global runs has no row of its own."""
    rows = [
        ("--method", f"expert {e['name']}", expert_table(name, e, "certify"))
        for e in router_experts(name)
        if global_twin(name, e) is None
    ]
    rows += [
        ("--method", CASCADE_ROWS[v], f"results/{name}/certify/cascade_{v}.tsv")
        for v in EXPERIMENTS[name]["cascade"]["variants"]
    ]
    rows += [
        ("--dual", row, f"results/{name}/certify/dual/{stem}.tsv")
        for row, stem in dual_names(name).items()
    ]
    if router_experts(name):
        rows.append(("--dual", "router", f"results/{name}/certify/router.tsv"))
    return rows

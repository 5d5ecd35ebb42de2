# Ablation settings: value spellings in paths, which runs an ablation value reuses, CLI arguments.
from dualrs.config_checks import number_spelling

ABLATIONS = (
    "lam",
    "labels",
    "n_label",
    "train_fraction",
    "alpha_beta",
    "temperature",
    "radius_weight",
    "class_weight",
    "estimator_arch",
    "sigmas",
)
ESTIMATOR_ABLATIONS = tuple(
    ablation for ablation in ABLATIONS if ablation != "alpha_beta"
)


def ablation_value(ablation, value):
    """Path spelling of a configured value: 10, hard, 1000, 0.5, 0.0005_0.0015 ([alpha, beta]), plain,
    digits_mlp, timm-resnet18 (timm/resnet18), 0.25_1 (the candidate set [0.25, 1.0]).
    """
    if ablation == "alpha_beta":
        return "_".join(number_spelling(level) for level in value)
    if ablation == "sigmas":
        return "_".join(fmt(sigma) for sigma in sorted(value))
    if ablation == "estimator_arch":
        return "-".join(Path(value).parts)
    if ablation == "n_label" or isinstance(value, str):
        return str(value)
    return number_spelling(value)


def ablation_setting(name, ablation, value):
    """The configured value of an ablation whose path spelling is ``value``."""
    for setting in EXPERIMENTS[name]["ablations"][ablation]:
        if ablation_value(ablation, setting) == value:
            return setting
    raise WorkflowError(
        f"config: experiments.{name}.ablations.{ablation} has no value spelled {value!r}"
    )


def ablation_row(name, ablation, value):
    """Table row of a path value: lam=10, labels=hard, alpha=0.0005, beta=0.0015, estimator_arch=timm/resnet18,
    sigmas={0.25, 1}."""
    if ablation == "alpha_beta":
        alpha, beta = value.split("_")
        return f"alpha={alpha}, beta={beta}"
    if ablation == "sigmas":
        return "sigmas={" + ", ".join(value.split("_")) + "}"
    if ablation == "estimator_arch":
        return f"{ablation}={ablation_setting(name, ablation, value)}"
    return f"{ablation}={value}"


def ablation_values(name, ablation):
    """Path values of one configured ablation; one error naming the key when it is not configured."""
    settings = EXPERIMENTS[name].get("ablations", {})
    if ablation not in settings:
        raise WorkflowError(
            f"config: experiments.{name}.ablations has no `{ablation}` list"
        )
    return [ablation_value(ablation, v) for v in settings[ablation]]


def check_ablations(name, cfg):
    """Values must stay distinct once spelled in paths (a candidate set in any order is one set)."""
    for ablation, values in cfg.get("ablations", {}).items():
        spelled = [ablation_value(ablation, v) for v in values]
        if len(set(spelled)) != len(spelled):
            raise WorkflowError(
                f"config: experiments.{name}.ablations.{ablation} has values that coincide "
                f"in paths: {spelled}"
            )


for _name, _cfg in EXPERIMENTS.items():
    check_ablations(_name, _cfg)


def own_setting(name, ablation):
    """The experiment's own setting of the ablated quantity, as a configured value would give it."""
    cfg = EXPERIMENTS[name]
    estimator = cfg["estimator"]
    temperature = estimator.get("temperature")
    return {
        "lam": estimator["lam"],
        "labels": "soft",
        "n_label": cfg["label"]["n"],
        "train_fraction": 1.0,
        "alpha_beta": [cfg["certify"]["alpha"], cfg["certify"]["beta"]],
        "temperature": "plain" if temperature is None else temperature,
        "radius_weight": estimator.get("radius_weight", "strong"),
        "class_weight": "both",
        "estimator_arch": estimator["arch"],
        "sigmas": cfg["sigmas"],
    }[ablation]


def is_experiment_setting(name, ablation, value):
    """Whether the path value is the experiment's own setting of the ablated quantity."""
    return value == ablation_value(ablation, own_setting(name, ablation))


def ablation_dir(name, ablation, value):
    return f"results/{name}/ablations/{ablation}/{value}"


def ablation_sigmas(name, ablation, value):
    """The candidate set Σ of an ablation value: the ablated subset, else the experiment's sigmas."""
    if ablation == "sigmas":
        return sorted(float(sigma) for sigma in ablation_setting(name, ablation, value))
    return sigmas(name)


def ablation_sigma_e(name, ablation, value):
    """sigma_e of an ablation value: the experiment's, or max Σ of the ablated candidate set when it has none."""
    return EXPERIMENTS[name]["sigma_e"] or max(ablation_sigmas(name, ablation, value))


def ablation_labels(name, ablation, value):
    """Per-sigma label tables the estimator of this ablation value is trained on."""
    if ablation == "n_label" and not is_experiment_setting(name, ablation, value):
        return [
            f"{ablation_dir(name, ablation, value)}/labels/sigma{fmt(s)}.tsv"
            for s in sigmas(name)
        ]
    return [
        f"results/{name}/labels/it0/sigma{fmt(s)}.tsv"
        for s in ablation_sigmas(name, ablation, value)
    ]


def ablation_label_args(name, ablation, value, labels):
    """--labels SIGMA=TSV of each candidate sigma of the ablation value."""
    return " ".join(
        f"--labels {fmt(s)}={path}"
        for s, path in zip(ablation_sigmas(name, ablation, value), labels)
    )


def label_sampling_args(wildcards):
    """The experiment's label settings and this job's shard, with n = the ablated value."""
    return sampling_flags(wildcards, exp(wildcards)["label"], n=wildcards.value)


def ablation_model_args(name, ablation, value):
    """--arch and --model-options of the estimator: the ablated architecture with its builder's defaults,
    else the experiment's."""
    if ablation == "estimator_arch":
        return f"--arch {shlex.quote(ablation_setting(name, ablation, value))} --model-options '{{}}'"
    estimator = EXPERIMENTS[name]["estimator"]
    return f"--arch {shlex.quote(estimator['arch'])} --model-options {shlex.quote(json.dumps(estimator['options']))}"


def ablation_init_weights(name, ablation):
    """The experiment's initial estimator weights, if any; none for another architecture."""
    weights = EXPERIMENTS[name]["estimator"]["weights"]
    if not weights or ablation == "estimator_arch":
        return []
    return [existing(weights, "estimator.weights", name)]


def ablation_estimator(name, ablation, value):
    if ablation == "alpha_beta" or is_experiment_setting(name, ablation, value):
        return f"results/{name}/models/estimator_it0.safetensors"
    return f"{ablation_dir(name, ablation, value)}/estimator.safetensors"


def ablation_certificates(name, ablation, value):
    if is_experiment_setting(name, ablation, value):
        return f"results/{name}/certify/dual/it0.tsv"
    return f"{ablation_dir(name, ablation, value)}/certify.tsv"


def ablation_classifiers(name, ablation, value):
    """Round-0 classifier checkpoint of each candidate sigma of the ablation value."""
    return {
        s: classifier_checkpoint(name, 0, s)
        for s in ablation_sigmas(name, ablation, value)
    }


def ablation_classifier_args(name, ablation, value):
    return " ".join(
        f"--classifier {fmt(s)}={path}"
        for s, path in ablation_classifiers(name, ablation, value).items()
    )


def ablation_levels(name, ablation, value):
    """CLI failure probabilities of certification: the ablated [alpha, beta] or the experiment's."""
    if ablation == "alpha_beta":
        alpha, beta = value.split("_")
    else:
        alpha, beta = (
            EXPERIMENTS[name]["certify"]["alpha"],
            EXPERIMENTS[name]["certify"]["beta"],
        )
    return f"--alpha {alpha} --beta {beta}"


def ablation_training_args(name, ablation, value):
    """train-estimator options of the loss and targets, the ablated one changed from the experiment's."""
    estimator = dict(EXPERIMENTS[name]["estimator"])
    if ablation in ("lam", "radius_weight"):
        estimator[ablation] = value
    if ablation == "temperature":
        estimator["temperature"] = None if value == "plain" else value
    args = (
        f"{estimator_target_args(estimator)} --lam {estimator['lam']} --eta {estimator['eta']} "
        f"--copies {estimator['copies']}"
    )
    if ablation == "labels" and value == "hard":
        args += " --hard-labels"
    if ablation == "train_fraction":
        args += f" --train-fraction {value}"
    if ablation == "class_weight":
        args += f" --class-weight {value}"
    return args


def ablation_tables(names):
    """Every configured ablation table of the given experiments."""
    return [
        f"results/tables/ablations/{name}_{ablation}.csv"
        for name in names
        for ablation in EXPERIMENTS[name].get("ablations", {})
    ]

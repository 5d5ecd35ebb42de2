# Ablation settings: value spellings in paths, which runs an ablation value reuses, CLI arguments.

ABLATIONS = ("lam", "labels", "n_label", "train_fraction", "alpha_beta")
ESTIMATOR_ABLATIONS = ("lam", "labels", "n_label", "train_fraction")


def ablation_value(ablation, value):
    """Path spelling of a configured value: 10, hard, 1000, 0.5, 0.0005_0.0015 ([alpha, beta])."""
    if ablation == "alpha_beta":
        return "_".join(fmt(level) for level in value)
    if ablation in ("labels", "n_label"):
        return str(value)
    return fmt(value)


def ablation_row(ablation, value):
    """Table row of a path value: lam=10, labels=hard, alpha=0.0005, beta=0.0015."""
    if ablation == "alpha_beta":
        alpha, beta = value.split("_")
        return f"alpha={alpha}, beta={beta}"
    return f"{ablation}={value}"


def ablation_values(name, ablation):
    """Path values of one configured ablation; one error naming the key when it is not configured."""
    settings = EXPERIMENTS[name].get("ablations", {})
    if ablation not in settings:
        raise WorkflowError(f"config: experiments.{name}.ablations has no `{ablation}` list")
    return [ablation_value(ablation, v) for v in settings[ablation]]


def check_ablations(name, cfg):
    """Values must stay distinct once spelled in paths (fmt keeps 6 significant digits)."""
    for ablation, values in cfg.get("ablations", {}).items():
        spelled = [ablation_value(ablation, v) for v in values]
        if len(set(spelled)) != len(spelled):
            raise WorkflowError(f"config: experiments.{name}.ablations.{ablation} has values that coincide "
                                f"in paths: {spelled}")


for _name, _cfg in EXPERIMENTS.items():
    check_ablations(_name, _cfg)


def is_experiment_setting(name, ablation, value):
    """Whether the path value is the experiment's own setting of the ablated quantity."""
    cfg = EXPERIMENTS[name]
    if ablation == "lam":
        return float(value) == float(cfg["estimator"]["lam"])
    if ablation == "labels":
        return value == "soft"
    if ablation == "n_label":
        return int(value) == cfg["label"]["n"]
    if ablation == "train_fraction":
        return float(value) == 1.0
    alpha, beta = (float(level) for level in value.split("_"))
    return (alpha, beta) == (cfg["certify"]["alpha"], cfg["certify"]["beta"])


def ablation_dir(name, ablation, value):
    return f"results/{name}/ablations/{ablation}/{value}"


def ablation_labels(name, ablation, value):
    """Per-sigma label tables the estimator of this ablation value is trained on."""
    if ablation == "n_label" and not is_experiment_setting(name, ablation, value):
        return [f"{ablation_dir(name, ablation, value)}/labels/sigma{fmt(s)}.tsv" for s in sigmas(name)]
    return [f"results/{name}/labels/it0/sigma{fmt(s)}.tsv" for s in sigmas(name)]


def label_sampling_args(wildcards):
    """The experiment's label settings and this job's shard, with n = the ablated value."""
    return sampling_flags(wildcards, exp(wildcards)["label"], n=wildcards.value)


def ablation_estimator(name, ablation, value):
    if ablation == "alpha_beta" or is_experiment_setting(name, ablation, value):
        return f"results/{name}/models/estimator_it0.safetensors"
    return f"{ablation_dir(name, ablation, value)}/estimator.safetensors"


def ablation_certificates(name, ablation, value):
    if is_experiment_setting(name, ablation, value):
        return f"results/{name}/certify/dual/it0.tsv"
    return f"{ablation_dir(name, ablation, value)}/certify.tsv"


def ablation_levels(name, ablation, value):
    """CLI failure probabilities of certification: the ablated [alpha, beta] or the experiment's."""
    if ablation == "alpha_beta":
        alpha, beta = value.split("_")
    else:
        alpha, beta = EXPERIMENTS[name]["certify"]["alpha"], EXPERIMENTS[name]["certify"]["beta"]
    return f"--alpha {alpha} --beta {beta}"


def ablation_training_args(name, ablation, value):
    """train-estimator options that differ from the experiment's estimator."""
    estimator = EXPERIMENTS[name]["estimator"]
    lam = value if ablation == "lam" else estimator["lam"]
    args = (f"--temperature {estimator['temperature']} --lam {lam} --eta {estimator['eta']} "
            f"--copies {estimator['copies']}")
    if ablation == "labels" and value == "hard":
        args += " --hard-labels"
    if ablation == "train_fraction":
        args += f" --train-fraction {value}"
    return args


def ablation_tables(names):
    """Every configured ablation table of the given experiments."""
    return [f"results/tables/ablations/{name}_{ablation}.csv"
            for name in names for ablation in EXPERIMENTS[name].get("ablations", {})]

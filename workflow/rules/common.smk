# Configuration: schema validation, consistency checks, path helpers and target lists.
import json
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


validate(config, "../schemas/config.schema.yaml")

EXPERIMENTS = config["experiments"]


wildcard_constraints:
    experiment="|".join(EXPERIMENTS),
    data="digits|cifar10|imagenet",
    sigma=r"[0-9]+(\.[0-9]+)?",
    it=r"[0-9]+",
    shard=r"[0-9]+",


def check_experiment(name, cfg):
    """Cross-key rules the schema cannot express; one error naming the key."""
    where = f"config: experiments.{name}"
    if cfg["data"] not in config["data"] and cfg["data"] != "digits":
        raise WorkflowError(f"{where}.data is {cfg['data']!r}, but `data` has no block {cfg['data']!r}")
    classifier = cfg["classifier"]
    if classifier["weights"] is None and "train" not in classifier:
        raise WorkflowError(f"{where}.classifier needs `train` settings or off-the-shelf `weights`")
    if classifier["weights"] is not None and "denoiser" not in cfg:
        raise WorkflowError(f"{where}.classifier.weights (one off-the-shelf model for every sigma) needs a `denoiser`")
    if cfg["iterations"] > 1 and "finetune" not in cfg:
        raise WorkflowError(f"{where}.iterations is {cfg['iterations']}, which needs a `finetune` block")


for _name, _cfg in EXPERIMENTS.items():
    check_experiment(_name, _cfg)
for _name in config["default_targets"]:
    if _name not in EXPERIMENTS:
        raise WorkflowError(f"config: default_targets names {_name!r}, which is not in experiments")


def fmt(sigma):
    """Canonical spelling of a sigma in paths: 0.25, 0.5, 1."""
    return f"{float(sigma):g}"


def exp(wildcards):
    return EXPERIMENTS[wildcards.experiment]


def sigmas(name):
    return sorted(float(s) for s in EXPERIMENTS[name]["sigmas"])


def sigma_e(name):
    return EXPERIMENTS[name]["sigma_e"] or max(sigmas(name))


def radii(name):
    return EXPERIMENTS[name].get("radii", config["radii"])


def ready(wildcards):
    return f"data/{exp(wildcards)['data']}/READY"


def data_args(wildcards):
    """CLI arguments naming the prepared dataset and its options."""
    data = exp(wildcards)["data"]
    options = json.dumps(config["data"].get(data, {}))
    return f"--dataset {data} --root data/{data} --data-options {shlex.quote(options)}"


def optim_args(settings, batch_flag="--batch-size"):
    args = f"--epochs {settings['epochs']} {batch_flag} {settings['batch_size']} --lr {settings['lr']}"
    return args + f" --weight-decay {settings.get('weight_decay', 0.0)} --num-workers {settings.get('num_workers', 0)}"


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


def classifier_checkpoint(name, it, sigma):
    """Checkpoint of the classifier for sigma in estimator round ``it`` (round k >= 1 is finetuned)."""
    cfg = EXPERIMENTS[name]["classifier"]
    if int(it) > 0:
        return f"results/{name}/models/it{it}/classifier_sigma{fmt(sigma)}.safetensors"
    if cfg["weights"] is not None:
        return f"results/{name}/models/classifier_pretrained.safetensors"
    if cfg["noise"] == "per_sigma":
        return f"results/{name}/models/classifier_sigma{fmt(sigma)}.safetensors"
    return f"results/{name}/models/classifier_noise{fmt(cfg['noise'])}.safetensors"


def classifier_args(name, it):
    return " ".join(f"--classifier {fmt(s)}={classifier_checkpoint(name, it, s)}" for s in sigmas(name))


def num_shards(name, stage):
    return EXPERIMENTS[name]["label" if stage.startswith("labels") else "certify"]["shards"]


def sampling_args(wildcards, stage):
    """CLI Monte Carlo settings of ``stage`` (label / certify) and this job's shard."""
    cfg = exp(wildcards)
    settings = cfg[stage]
    return (f"--n0 {settings['n0']} --n {settings['n']} --batch-size {cfg['batch_size']} "
            f"--every {settings['every']} --shard {wildcards.shard} --num-shards {settings['shards']}")


def dual_names(name):
    """Report row name of each estimator round."""
    rounds = EXPERIMENTS[name]["iterations"]
    if rounds == 1:
        return {0: "dual"}
    return {it: "dual (off-the-shelf)" if it == 0 else f"dual (finetuned, round {it})" for it in range(rounds)}


def gpu(wildcards):
    return exp(wildcards)["resources"]["gpu"]


def mem_mb(wildcards):
    return exp(wildcards)["resources"]["mem_mb"]


def runtime(wildcards):
    return exp(wildcards)["resources"]["runtime"]


def table_outputs(name):
    return [f"results/tables/{name}.{ext}" for ext in ("csv", "md", "tex")]


def default_targets():
    return [f"results/tables/{name}.csv" for name in config["default_targets"]]

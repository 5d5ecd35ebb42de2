# Configuration: schema validation, then the plan of the jobs (dualrs.plan: paths, reuse, CLI arguments),
# handed to the rules as functions of experiment names or of their wildcards.
import functools
import json  # the rules quote JSON options with json and shlex
import shlex

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

from dualrs import plan
from dualrs.config_checks import (
    SIGMA_PATTERN,
    config_problems,
    dataset_names,
    config_warnings,
    sigma_spelling,
)
from dualrs.plan import CASCADE_ROWS, Plan, PlanError, schema_problems
from dualrs.plan import estimator_target_args, expert_json, optim_args  # for the rules

SCHEMA = "../schemas/config.schema.yaml"


def planned(function):
    """``function`` of dualrs.plan, which may refuse a configuration or target (PlanError), for the rules:
    its PlanError is the WorkflowError Snakemake reports."""

    def call(*args):
        try:
            return function(*args)
        except PlanError as error:
            raise WorkflowError(str(error)) from None

    return call


refuse = planned(plan.refuse)


def validate_config(config):
    """Every rule of the schema, one line per problem naming the key (dualrs.plan.schema_problems); then
    Snakemake's validation, which fills in the defaults, and the cross-key rules (dualrs.config_checks).
    """
    refuse(schema_problems(config, workflow.configfiles, workflow.source_path(SCHEMA)))
    validate(config, SCHEMA)
    refuse(config_problems(config))
    for warning in config_warnings(config):
        logger.warning(warning)


validate_config(config)
PLAN = Plan(config)
EXPERIMENTS = PLAN.experiments


wildcard_constraints:
    experiment="|".join(EXPERIMENTS),
    data="|".join(dataset_names()),
    sigma=SIGMA_PATTERN,
    noise=SIGMA_PATTERN,
    it=r"[0-9]+",
    shard=r"[0-9]+",
    expert=r"[A-Za-z0-9_.=-]+",


def fmt(sigma):
    """Spelling of a sigma in paths (0.25, 0.5, 1): the one the configuration was checked with."""
    return sigma_spelling(sigma)


for _warning in PLAN.radius_cap_warnings():
    logger.warning(_warning)
planned(PLAN.check_router)()

existing = planned(plan.existing)
sigmas = PLAN.sigmas
radii = PLAN.radii
classifier_checkpoint = PLAN.classifier_checkpoint
classifier_args = PLAN.classifier_args
num_shards = PLAN.num_shards
default_targets = PLAN.default_targets
router_experts = PLAN.router_experts
expert_table = PLAN.expert_table
report_rows = PLAN.report_rows
CASCADE_VARIANTS = "|".join(CASCADE_ROWS)  # dualrs certify-cascade --variant


def plan_of(wildcards):
    """The plan of a job: the configuration's, or for an ablation job ({ablation}, {value}) the configuration
    with the experiment's ablated setting overridden (dualrs.plan.Plan.ablated)."""
    if "ablation" in wildcards.keys():
        return planned(PLAN.ablated)(
            wildcards.experiment, wildcards.ablation, wildcards.value
        )
    return PLAN


def exp(wildcards):
    return plan_of(wildcards).experiment(wildcards.experiment)


def job_round(wildcards):
    """The job's classifier round: {it}; 0 for an ablation (ablations vary round-0 dual RS)."""
    return wildcards.get("it", "0")


def candidate_sigmas(wildcards):
    """The candidate set of the job's plan."""
    return plan_of(wildcards).sigmas(wildcards.experiment)


@functools.cache
def check_models(name):
    """Checked once per experiment, when its jobs are planned (importing timm or transformers takes seconds)."""
    planned(PLAN.check_models)(name)


def ready(wildcards):
    check_models(wildcards.experiment)
    return PLAN.ready(wildcards.experiment)


def data_args(wildcards):
    return PLAN.data_args(wildcards.experiment)


def denoiser_input(wildcards):
    return planned(PLAN.denoiser_input)(wildcards.experiment)


def denoiser_arg(wildcards, input):
    return f"--denoiser {input.denoiser}" if input.denoiser else ""


def sampling_args(stage):
    """Params function: CLI Monte Carlo settings of ``stage`` (label / certify) and the job's shard."""

    def args(wildcards):
        return plan_of(wildcards).sampling_args(
            wildcards.experiment, stage, wildcards.shard
        )

    return args


def sigma_e(wildcards):
    """The experiment's sigma_e: its setting, else its largest sigma."""
    return plan_of(wildcards).sigma_e(wildcards.experiment)


def certify_levels(wildcards):
    """``--alpha a --beta b``: the experiment's certify levels."""
    certify = exp(wildcards)["certify"]
    return f"--alpha {certify['alpha']} --beta {certify['beta']}"


def radii_args(wildcards):
    """The experiment's radii, space-separated."""
    return " ".join(str(r) for r in radii(wildcards.experiment))


def base_classifier(wildcards):
    """Round 0's classifier checkpoint of {sigma}."""
    return classifier_checkpoint(wildcards.experiment, 0, wildcards.sigma)


def round_classifiers(wildcards):
    """The job's round's classifier checkpoints, one per candidate sigma."""
    return [
        classifier_checkpoint(wildcards.experiment, job_round(wildcards), s)
        for s in candidate_sigmas(wildcards)
    ]


def round_classifier_args(wildcards):
    """``--classifier sigma=path`` of each candidate sigma, the job's round."""
    return plan_of(wildcards).classifier_args(
        wildcards.experiment, job_round(wildcards)
    )


def previous_round_estimator(wildcards):
    """Round {it}-1's estimator: train_estimator's model with it - 1."""
    return rules.train_estimator.output.model.format(
        experiment=wildcards.experiment, it=int(wildcards.it) - 1
    )


def model_arch(part):
    """Params function: the architecture of ``part`` (classifier / estimator)."""

    def arch(wildcards):
        return exp(wildcards)[part]["arch"]

    return arch


def model_options(part):
    """Params function: the model options of ``part`` (classifier / estimator), shell-quoted JSON."""

    def options(wildcards):
        return shlex.quote(json.dumps(exp(wildcards)[part]["options"]))

    return options


def training_optim(part):
    """Params function: the optimizer arguments of ``part``'s (classifier / estimator) training."""

    def optim(wildcards):
        return optim_args(exp(wildcards)[part]["train"])

    return optim


def estimator_settings(wildcards):
    """The experiment's estimator section (lam, eta, copies for the command)."""
    return exp(wildcards)["estimator"]


def estimator_seed(wildcards):
    """The seed of the job's estimator (or router) training: estimator.seed, else the config's."""
    return plan_of(wildcards).estimator_seed(wildcards.experiment)


def estimator_targets(wildcards):
    """CLI arguments of the estimator's training targets."""
    return estimator_target_args(exp(wildcards)["estimator"])


def training_noise(wildcards):
    """The Gaussian noise a classifier trains under: {noise} for one classifier shared by every sigma
    (denoised smoothing), the classifier's {sigma}, else (noise: mixed) every sigma of Sigma.
    """
    return wildcards.get("noise", wildcards.get("sigma")) or " ".join(
        fmt(s) for s in PLAN.sigmas(wildcards.experiment)
    )


def estimator_weights(wildcards):
    """The estimator's initial weights, when its plan has them (they must exist)."""
    weights = exp(wildcards)["estimator"]["weights"]
    return (
        [existing(weights, "estimator.weights", wildcards.experiment)]
        if weights
        else []
    )


def weights_arg(wildcards, input):
    """``--weights <path>`` when the job has initial weights, else nothing."""
    return f"--weights {input.weights}" if input.weights else ""


def gpu(wildcards):
    return exp(wildcards)["resources"]["gpu"]


def mem_mb(wildcards):
    return exp(wildcards)["resources"]["mem_mb"]


def runtime(wildcards, attempt):
    """Minutes per job, times the attempt: a job retried after its time limit resumes from its
    ``.partial`` table with more time (the Slurm profile's ``retries``)."""
    return exp(wildcards)["resources"]["runtime"] * attempt


def expert(wildcards):
    return planned(PLAN.expert)(wildcards.experiment, wildcards.expert)


def expert_inputs(wildcards):
    return planned(PLAN.expert_inputs)(wildcards.experiment, wildcards.expert)


def expert_settings(wildcards):
    return PLAN.expert_settings(wildcards.experiment, wildcards.split)


def expert_sampling_args(wildcards):
    settings = expert_settings(wildcards)
    return PLAN.sampling_flags(wildcards.experiment, settings, wildcards.shard)

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
sigma_e = PLAN.sigma_e
radii = PLAN.radii
classifier_checkpoint = PLAN.classifier_checkpoint
classifier_args = PLAN.classifier_args
num_shards = PLAN.num_shards
default_targets = PLAN.default_targets
router_experts = PLAN.router_experts
expert_table = PLAN.expert_table
report_rows = PLAN.report_rows
CASCADE_VARIANTS = "|".join(CASCADE_ROWS)  # dualrs certify-cascade --variant


def exp(wildcards):
    return PLAN.experiment(wildcards.experiment)


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


def sampling_args(wildcards, stage):
    """CLI Monte Carlo settings of ``stage`` (label / certify) and this job's shard."""
    return PLAN.sampling_args(wildcards.experiment, stage, wildcards.shard)


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

# Dual randomized smoothing pipeline: data -> experts -> labels -> estimator -> certificates -> tables.
# `snakemake --cores 2` builds the default targets (config: default_targets);
# `snakemake results/tables/<experiment>.csv` builds one experiment.
# `snakemake ablations` builds the ablation tables (results/tables/ablations/) of the default targets.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/dvc_params.smk"
include: "workflow/rules/common.smk"
include: "workflow/rules/code.smk"
include: "workflow/rules/job_server.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/label.smk"
include: "workflow/rules/estimator.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/certify.smk"
include: "workflow/rules/router.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/ablations.smk"


rule all:
    """The tables and figures of the default experiments."""
    default_target: True
    input:
        default_targets(),

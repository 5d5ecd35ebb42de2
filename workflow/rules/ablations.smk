# One-factor ablations of round-0 dual RS (round-0 classifiers, estimator trained from round-0 labels):
# each varies one setting over the values in experiments.<experiment>.ablations; one table per ablation,
# one row per value. An ablation value's jobs are the experiment's round-0 rules under the plan with that
# setting overridden (plan_of, dualrs.plan.Plan.ablated). A value equal to the experiment's own setting
# reuses its round-0 estimator and certificates.


include: "ablations_common.smk"


use rule certify_training_set as ablation_certify_training_set with:
    """Labels for the n_label and label_precision ablations: the training set certified anew with that one
    sampling setting changed ({ablation} = {value}), one shard."""
    input:
        ready,
        classifier=base_classifier,
        denoiser=denoiser_input,
    output:
        "results/{experiment}/ablations/{ablation}/{value}/labels/shards/sigma{sigma}_shard{shard}.tsv",
    log:
        "logs/{experiment}/ablations/{ablation}/{value}/label/sigma{sigma}_shard{shard}.log",
    benchmark:
        "logs/{experiment}/benchmark/ablations/{ablation}/{value}/label/sigma{sigma}_shard{shard}.tsv"
    wildcard_constraints:
        ablation="|".join(LABEL_ABLATIONS),
        value=r"[^/]+",


use rule train_estimator as ablation_estimator with:
    """Ablation {ablation} = {value}: the round-0 estimator trained with that one setting changed."""
    input:
        ready,
        labels=lambda wc: ablation_labels(wc.experiment, wc.ablation, wc.value),
        weights=estimator_weights,
        denoiser=denoiser_input,
    output:
        model="results/{experiment}/ablations/{ablation}/{value}/estimator.safetensors",
        meta="results/{experiment}/ablations/{ablation}/{value}/estimator.json",
    log:
        "logs/{experiment}/ablations/{ablation}/{value}/train_estimator.log",
    benchmark:
        "logs/{experiment}/benchmark/ablations/{ablation}/{value}/train_estimator.tsv"
    wildcard_constraints:
        ablation="|".join(ESTIMATOR_ABLATIONS),
        value=r"[^/]+",


use rule certify_dual as ablation_certify with:
    """Ablation {ablation} = {value}: round-0 dual RS on the test set with that one setting changed, one shard."""
    input:
        ready,
        estimator=lambda wc: ablation_estimator(wc.experiment, wc.ablation, wc.value),
        classifiers=round_classifiers,
        denoiser=denoiser_input,
    output:
        "results/{experiment}/ablations/{ablation}/{value}/shards/certify_shard{shard}.tsv",
    log:
        "logs/{experiment}/ablations/{ablation}/{value}/certify_shard{shard}.log",
    benchmark:
        "logs/{experiment}/benchmark/ablations/{ablation}/{value}/certify_shard{shard}.tsv"
    wildcard_constraints:
        ablation="|".join(ABLATIONS),
        value=r"[^/]+",


localrules:
    merge_ablation_certificates,
    merge_ablation_training_set_certificates,
    ablation_report,


use rule merge_training_set_certificates as merge_ablation_certificates with:
    """The shards of an ablation's certification, joined."""
    input:
        ablation_shard_tables("certify"),
    output:
        "results/{experiment}/ablations/{folder}/{name}.tsv",
    log:
        "logs/{experiment}/ablations/{folder}/merge_{name}.log",
    benchmark:
        "logs/{experiment}/benchmark/ablations/{folder}/merge_{name}.tsv"
    wildcard_constraints:
        folder=rf"({'|'.join(ABLATIONS)})/[^/]+",
        name="certify",


use rule merge_ablation_certificates as merge_ablation_training_set_certificates with:
    """The shards of a labelling ablation's labels, joined."""
    input:
        ablation_shard_tables("labels"),
    wildcard_constraints:
        folder=rf"({'|'.join(LABEL_ABLATIONS)})/[^/]+/labels",
        name=rf"sigma{SIGMA_PATTERN}",


rule ablation_report:
    """The table of ablation {ablation}: one row per value, each compared input by input with the experiment's
    own round-0 dual RS (same choice of σ, mean change of certified radius), and the σ each value's estimator chose.
    """
    input:
        certificates=lambda wc: [
            ablation_certificates(wc.experiment, wc.ablation, v)
            for v in ablation_values(wc.experiment, wc.ablation)
        ],
        reference=lambda wc: ablation_reference(wc.experiment),
    output:
        table=report(
            "results/tables/ablations/{experiment}_{ablation}.csv",
            caption="../report/ablation.rst",
            category="{experiment}",
            subcategory="Ablations",
            labels={"ablation": "{ablation}"},
        ),
        markdown="results/tables/ablations/{experiment}_{ablation}.md",
        latex="results/tables/ablations/{experiment}_{ablation}.tex",
        metrics="results/tables/ablations/{experiment}_{ablation}.json",
        curves="results/tables/ablations/{experiment}_{ablation}_curve.csv",
        choices="results/tables/ablations/{experiment}_{ablation}_choices.csv",
        choices_markdown="results/tables/ablations/{experiment}_{ablation}_choices.md",
    log:
        "logs/{experiment}/ablations/{ablation}/report.log",
    benchmark:
        "logs/{experiment}/benchmark/ablations/{ablation}/report.tsv"
    wildcard_constraints:
        ablation="|".join(ABLATIONS),
    conda:
        "../envs/dualrs.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        dual_args=lambda wc, input: " ".join(
            shlex.quote(f"--dual={ablation_row(wc.experiment, wc.ablation, v)}={path}")
            for v, path in zip(
                ablation_values(wc.experiment, wc.ablation), input.certificates
            )
        ),
        radii=radii_args,
        sigmas=lambda wc: " ".join(fmt(s) for s in sigmas(wc.experiment)),
        code=code("report"),
    shell:
        "dualrs report {params.dual_args} --choices-reference {input.reference} --radii {params.radii} "
        "--sigmas {params.sigmas} --table {output.table} > {log} 2>&1"


rule ablations:
    """Every ablation table of the default experiments."""
    input:
        ablation_tables(config["default_targets"]),

# One-factor ablations of round-0 dual RS (round-0 classifiers, estimator trained from round-0 labels):
# each varies one setting over the values in experiments.<experiment>.ablations and certifies the test
# split with the experiment's certify settings; one table per ablation, one row per value.
# A value equal to the experiment's own setting reuses its round-0 estimator and certificates; a `sigmas` value
# (a candidate set Sigma) trains the estimator on those sigmas' round-0 labels and certifies with their classifiers.


include: "ablations_common.smk"


use rule certify_training_set as ablation_certify_training_set with:
    input:
        ready,
        classifier=base_classifier,
        denoiser=denoiser_input,
    output:
        "results/{experiment}/ablations/n_label/{value}/labels/shards/sigma{sigma}_shard{shard}.tsv",
    log:
        "logs/{experiment}/ablations/n_label/{value}/label/sigma{sigma}_shard{shard}.log",
    benchmark:
        "logs/{experiment}/benchmark/ablations/n_label/{value}/label/sigma{sigma}_shard{shard}.tsv"
    wildcard_constraints:
        value=r"[0-9]+",
    params:
        sampling=label_sampling_args,


rule ablation_estimator:
    input:
        ready,
        labels=lambda wc: ablation_labels(wc.experiment, wc.ablation, wc.value),
        weights=lambda wc: ablation_init_weights(wc.experiment, wc.ablation),
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
    conda:
        "../envs/dualrs.yaml"
    threads: 1
    resources:
        gpu=gpu,
        mem_mb=mem_mb,
        runtime=runtime,
    params:
        data=data_args,
        labels=lambda wc, input: ablation_label_args(
            wc.experiment, wc.ablation, wc.value, input.labels
        ),
        model=lambda wc: ablation_model_args(wc.experiment, wc.ablation, wc.value),
        weights=weights_arg,
        training=lambda wc: ablation_training_args(wc.experiment, wc.ablation, wc.value),
        optim=training_optim("estimator"),
        sigma_e=lambda wc: ablation_sigma_e(wc.experiment, wc.ablation, wc.value),
        denoiser=denoiser_arg,
        seed=config["seed"],
        code=code("tasks"),
    shell:
        "dualrs train-estimator {params.data} {params.labels} {params.model} "
        "{params.weights} --sigma-e {params.sigma_e} {params.training} "
        "{params.optim} {params.denoiser} --seed {params.seed} --threads {threads} --out {output.model} > {log} 2>&1"


rule ablation_certify:
    input:
        ready,
        estimator=lambda wc: ablation_estimator(wc.experiment, wc.ablation, wc.value),
        classifiers=lambda wc: list(
            ablation_classifiers(wc.experiment, wc.ablation, wc.value).values()
        ),
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
    conda:
        "../envs/dualrs.yaml"
    threads: 1
    resources:
        gpu=gpu,
        mem_mb=mem_mb,
        runtime=runtime,
    params:
        data=data_args,
        classifiers=lambda wc: ablation_classifier_args(
            wc.experiment, wc.ablation, wc.value
        ),
        sigma_e=lambda wc: ablation_sigma_e(wc.experiment, wc.ablation, wc.value),
        sampling=sampling_args("certify"),
        levels=lambda wc: ablation_levels(wc.experiment, wc.ablation, wc.value),
        denoiser=denoiser_arg,
        seed=config["seed"],
        code=code("tasks"),
    shell:
        "dualrs certify-dual {params.data} --estimator {input.estimator} {params.classifiers} "
        "--sigma-e {params.sigma_e} {params.denoiser} {params.sampling} {params.levels} "
        "--seed {params.seed} --threads {threads} --out {output} > {log} 2>&1"


localrules:
    merge_ablation_certificates,
    merge_ablation_training_set_certificates,
    ablation_report,


use rule merge_training_set_certificates as merge_ablation_certificates with:
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
    input:
        ablation_shard_tables("labels"),
    wildcard_constraints:
        folder=r"n_label/[0-9]+/labels",
        name=rf"sigma{SIGMA_PATTERN}",


rule ablation_report:
    input:
        lambda wc: [
            ablation_certificates(wc.experiment, wc.ablation, v)
            for v in ablation_values(wc.experiment, wc.ablation)
        ],
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
            for v, path in zip(ablation_values(wc.experiment, wc.ablation), input)
        ),
        radii=radii_args,
        code=code("report"),
    shell:
        "dualrs report {params.dual_args} --radii {params.radii} --table {output.table} > {log} 2>&1"


rule ablations:
    input:
        ablation_tables(config["default_targets"]),

# Test-set certificates: standard RS at each global sigma (round-0 classifiers), dual RS per round, and
# dual RS with round k-1's estimator and the classifiers finetuned under it (the paper's headline row).


rule certify_global:
    """Standard RS at global sigma on the test set, one shard (Cohen et al. 2019): the baselines."""
    input:
        ready,
        classifier=base_classifier,
        denoiser=denoiser_input,
    output:
        "results/{experiment}/certify/global/shards/sigma{sigma}_shard{shard}.tsv",
    log:
        "logs/{experiment}/certify_global/sigma{sigma}_shard{shard}.log",
    benchmark:
        "logs/{experiment}/benchmark/certify_global/sigma{sigma}_shard{shard}.tsv"
    conda:
        "../envs/dualrs.yaml"
    threads: 1
    resources:
        gpu=gpu,
        mem_mb=mem_mb,
        runtime=runtime,
    params:
        data=data_args,
        sampling=sampling_args("certify"),
        alpha=lambda wc: exp(wc)["certify"]["alpha"],
        denoiser=denoiser_arg,
        seed=config["seed"],
        code=code("tasks"),
    shell:
        "dualrs certify-global {params.data} --classifier {input.classifier} --sigma {wildcards.sigma} "
        "{params.denoiser} {params.sampling} --alpha {params.alpha} --seed {params.seed} "
        "--threads {threads} --out {output} > {log} 2>&1"


rule certify_dual:
    """Dual RS of round {it} on the test set, one shard: R = min(R_sigma, R_c) at level 1 - alpha - beta (Theorem 4.2)."""
    input:
        ready,
        estimator=rules.train_estimator.output.model,
        classifiers=round_classifiers,
        denoiser=denoiser_input,
    output:
        "results/{experiment}/certify/dual/shards/it{it}_shard{shard}.tsv",
    log:
        "logs/{experiment}/certify_dual/it{it}_shard{shard}.log",
    benchmark:
        "logs/{experiment}/benchmark/certify_dual/it{it}_shard{shard}.tsv"
    conda:
        "../envs/dualrs.yaml"
    threads: 1
    resources:
        gpu=gpu,
        mem_mb=mem_mb,
        runtime=runtime,
    params:
        data=data_args,
        classifiers=round_classifier_args,
        sigma_e=sigma_e,
        sampling=sampling_args("certify"),
        levels=certify_levels,
        adaptive=lambda wc: (
            f"--adaptive --radii {radii_args(wc)}"
            if exp(wc)["certify"]["adaptive"]
            else ""
        ),
        denoiser=denoiser_arg,
        seed=config["seed"],
        code=code("tasks"),
    shell:
        "dualrs certify-dual {params.data} --estimator {input.estimator} {params.classifiers} "
        "--sigma-e {params.sigma_e} {params.denoiser} {params.sampling} {params.levels} {params.adaptive} "
        "--seed {params.seed} --threads {threads} --out {output} > {log} 2>&1"


use rule certify_dual as certify_dual_finetuned with:
    """The paper's headline row: the round-{it}-1 estimator with the round-{it} finetuned classifiers (Table 1)."""
    input:
        ready,
        estimator=previous_round_estimator,
        classifiers=round_classifiers,
        denoiser=denoiser_input,
    output:
        "results/{experiment}/certify/dual/shards/finetuned_it{it}_shard{shard}.tsv",
    log:
        "logs/{experiment}/certify_dual/finetuned_it{it}_shard{shard}.log",
    benchmark:
        "logs/{experiment}/benchmark/certify_dual/finetuned_it{it}_shard{shard}.tsv"


rule certify_cascade:
    """The Multiscale baseline (Jeong & Shin 2023), variant {variant}, one shard."""
    input:
        ready,
        classifiers=lambda wc: [
            classifier_checkpoint(wc.experiment, 0, s) for s in sigmas(wc.experiment)
        ],
        denoiser=denoiser_input,
    output:
        "results/{experiment}/certify/shards/cascade_{variant}_shard{shard}.tsv",
    log:
        "logs/{experiment}/certify_cascade/{variant}_shard{shard}.log",
    benchmark:
        "logs/{experiment}/benchmark/certify_cascade/{variant}_shard{shard}.tsv"
    wildcard_constraints:
        variant=CASCADE_VARIANTS,
    conda:
        "../envs/dualrs.yaml"
    threads: 1
    resources:
        gpu=gpu,
        mem_mb=mem_mb,
        runtime=runtime,
    params:
        data=data_args,
        classifiers=lambda wc: classifier_args(wc.experiment, 0),
        sampling=sampling_args("certify"),
        # The cascade spends the dual certificate's whole budget alpha + beta (the published variant's
        # per-stage levels alpha/(k+1) sum to more; see dualrs.cascade).
        alpha=lambda wc: exp(wc)["certify"]["alpha"] + exp(wc)["certify"]["beta"],
        threshold=lambda wc: exp(wc)["cascade"]["threshold"],
        denoiser=denoiser_arg,
        seed=config["seed"],
        code=code("tasks"),
    shell:
        "dualrs certify-cascade {params.data} {params.classifiers} {params.denoiser} {params.sampling} "
        "--alpha {params.alpha} --threshold {params.threshold} --variant {wildcards.variant} --seed {params.seed} "
        "--threads {threads} --out {output} > {log} 2>&1"

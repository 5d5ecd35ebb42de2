# Estimator labels: every training sample certified under every sigma (Sun et al. 2025, Sec. 5.1).


localrules:
    merge_shards,


rule label:
    input:
        ready,
        classifier=lambda wc: classifier_checkpoint(wc.experiment, wc.it, wc.sigma),
        denoiser=denoiser_input,
    output:
        "results/{experiment}/labels/it{it}/shards/sigma{sigma}_shard{shard}.tsv",
    log:
        "logs/{experiment}/label/it{it}_sigma{sigma}_shard{shard}.log",
    benchmark:
        "logs/{experiment}/benchmark/label/it{it}_sigma{sigma}_shard{shard}.tsv"
    conda:
        "../envs/dualrs.yaml"
    threads: 1
    resources:
        gpu=gpu,
        mem_mb=mem_mb,
        runtime=runtime,
    params:
        data=data_args,
        sampling=lambda wc: sampling_args(wc, "label"),
        alpha=lambda wc: exp(wc)["label"]["alpha"],
        denoiser=denoiser_arg,
        seed=config["seed"],
        code=code("tasks"),
    shell:
        "dualrs label {params.data} --classifier {input.classifier} --sigma {wildcards.sigma} "
        "{params.denoiser} {params.sampling} --alpha {params.alpha} --seed {params.seed} "
        "--threads {threads} --out {output} > {log} 2>&1"


rule merge_shards:
    input:
        lambda wc: [
            f"results/{wc.experiment}/{wc.stage}/shards/{wc.name}_shard{k}.tsv"
            for k in range(num_shards(wc.experiment, wc.stage))
        ],
    output:
        "results/{experiment}/{stage}/{name}.tsv",
    log:
        "logs/{experiment}/merge/{stage}/{name}.log",
    benchmark:
        "logs/{experiment}/benchmark/merge/{stage}/{name}.tsv"
    wildcard_constraints:
        stage=r"labels/it[0-9]+|certify/global|certify/dual|certify|router/labels|router/certify",
        name=r"[^/]+",
    conda:
        "../envs/dualrs.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=code("tables"),
    shell:
        "dualrs merge {input} --out {output} > {log} 2>&1"

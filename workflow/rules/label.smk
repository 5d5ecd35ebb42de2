# Estimator labels: every training sample certified under every sigma (Sun et al. 2025, Sec. 5.1);
# and the merges of every sharded stage, one rule per kind of table merged.


localrules:
    merge_training_set_certificates,
    merge_global_certificates,
    merge_dual_certificates,
    merge_cascade_certificates,
    merge_router_certificates,
    merge_expert_training_set_certificates,
    merge_expert_certificates,


rule certify_training_set:
    """Labels: every training input certified under sigma by CERTIFY with N_label draws (Sec. 5.1), one shard."""
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
        sampling=sampling_args("label"),
        alpha=lambda wc: exp(wc)["label"]["alpha"],
        denoiser=denoiser_arg,
        seed=config["seed"],
        code=code("tasks"),
    shell:
        "dualrs label {params.data} --classifier {input.classifier} --sigma {wildcards.sigma} "
        "{params.denoiser} {params.sampling} --alpha {params.alpha} --seed {params.seed} "
        "--threads {threads} --out {output} > {log} 2>&1"


# The body of every merge of shards: the others (below and in ablations.smk) use it for their own
# tables, so that a job's rule names the kind of table it merges.
rule merge_training_set_certificates:
    """The shards of a training-set certification, joined into one table per sigma."""
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
        stage=r"labels/it[0-9]+",
        name=rf"sigma{SIGMA_PATTERN}",
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


use rule merge_training_set_certificates as merge_global_certificates with:
    """The shards of standard RS at one global sigma, joined."""
    wildcard_constraints:
        stage="certify/global",
        name=rf"sigma{SIGMA_PATTERN}",


use rule merge_training_set_certificates as merge_dual_certificates with:
    """The shards of a dual RS certification, joined."""
    wildcard_constraints:
        stage="certify/dual",
        name=r"(finetuned_)?it[0-9]+",


use rule merge_training_set_certificates as merge_cascade_certificates with:
    """The shards of the Multiscale cascade, joined."""
    wildcard_constraints:
        stage="certify",
        name=rf"cascade_({CASCADE_VARIANTS})",


use rule merge_training_set_certificates as merge_router_certificates with:
    """The shards of the router's certification, joined."""
    wildcard_constraints:
        stage="certify",
        name="router",


use rule merge_training_set_certificates as merge_expert_training_set_certificates with:
    """The shards of an expert's training-set certification (router labels), joined."""
    wildcard_constraints:
        stage="router/labels",
        name=r"[^/]+",


use rule merge_training_set_certificates as merge_expert_certificates with:
    """The shards of an expert's test-set certification, joined."""
    wildcard_constraints:
        stage="router/certify",
        name=r"[^/]+",

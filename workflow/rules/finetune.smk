# Round it >= 1: route the training split with round it-1's estimator, then finetune each
# sigma's classifier on the inputs routed to it, under that sigma (Sun et al. 2025, Sec. 5.2).


rule route_training_set:
    """The sigma the round-{it} estimator picks for every training input, for finetuning (Sec. 5.2)."""
    input:
        ready,
        estimator=previous_round_estimator,
        denoiser=denoiser_input,
    output:
        "results/{experiment}/routes/it{it}.tsv",
    log:
        "logs/{experiment}/route/it{it}.log",
    benchmark:
        "logs/{experiment}/benchmark/route/it{it}.tsv"
    conda:
        "../envs/dualrs.yaml"
    threads: 1
    resources:
        gpu=gpu,
        mem_mb=mem_mb,
        runtime=runtime,
    params:
        data=data_args,
        sigma_e=sigma_e,
        n=lambda wc: exp(wc)["finetune"]["n_route"],
        batch_size=lambda wc: exp(wc)["batch_size"],
        precision=lambda wc: exp(wc).get("precision", "bf16"),
        denoiser=denoiser_arg,
        seed=config["seed"],
        code=code("tasks"),
    shell:
        "dualrs route {params.data} --estimator {input.estimator} --sigma-e {params.sigma_e} "
        "--n {params.n} --batch-size {params.batch_size} --precision {params.precision} "
        "{params.denoiser} --seed {params.seed} "
        "--threads {threads} --out {output} > {log} 2>&1"


rule finetune_classifier:
    """Round {it}: classifier f_sigma finetuned on the training inputs routed to sigma (Sec. 5.2)."""
    input:
        ready,
        classifier=lambda wc: classifier_checkpoint(
            wc.experiment, int(wc.it) - 1, wc.sigma
        ),
        routes=rules.route_training_set.output,
        denoiser=denoiser_input,
    output:
        model="results/{experiment}/models/it{it}/classifier_sigma{sigma}.safetensors",
        meta="results/{experiment}/models/it{it}/classifier_sigma{sigma}.json",
    log:
        "logs/{experiment}/finetune/it{it}_sigma{sigma}.log",
    benchmark:
        "logs/{experiment}/benchmark/finetune/it{it}_sigma{sigma}.tsv"
    conda:
        "../envs/dualrs.yaml"
    threads: 1
    resources:
        gpu=gpu,
        mem_mb=mem_mb,
        runtime=runtime,
    params:
        data=data_args,
        optim=lambda wc: optim_args(exp(wc)["finetune"]),
        denoiser=denoiser_arg,
        seed=config["seed"],
        sigma=lambda wc: f"--sigma {wc.sigma}",
        code=code("tasks"),
    shell:
        "dualrs finetune {params.data} --classifier {input.classifier} {params.sigma} "
        "--routes {input.routes} {params.optim} {params.denoiser} --seed {params.seed} "
        "--threads {threads} --out {output.model} > {log} 2>&1"


use rule finetune_classifier as finetune_shared_classifier with:
    """Round {it}: the shared classifier finetuned on every input under its routed sigma (Sec. 5.2)."""
    input:
        ready,
        classifier=lambda wc: classifier_checkpoint(
            wc.experiment, int(wc.it) - 1, sigmas(wc.experiment)[0]
        ),
        routes=rules.route_training_set.output,
        denoiser=denoiser_input,
    output:
        model="results/{experiment}/models/it{it}/classifier_shared.safetensors",
        meta="results/{experiment}/models/it{it}/classifier_shared.json",
    log:
        "logs/{experiment}/finetune/it{it}_shared.log",
    benchmark:
        "logs/{experiment}/benchmark/finetune/it{it}_shared.tsv"
    params:
        sigma="",

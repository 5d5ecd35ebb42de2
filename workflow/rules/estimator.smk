# Variance estimator of round {it}: soft labels from the per-sigma radii + consistency regularization.


rule train_estimator:
    """Variance estimator of round {it}: softmax-of-radii targets, loss E[w_e (softCE + w_r L_con)] on sigma_e-noised inputs (Sec. 5.1)."""
    input:
        ready,
        labels=lambda wc: [
            f"results/{wc.experiment}/labels/it{wc.it}/sigma{fmt(s)}.tsv"
            for s in sigmas(wc.experiment)
        ],
        weights=estimator_weights,
        denoiser=denoiser_input,
    output:
        model="results/{experiment}/models/estimator_it{it}.safetensors",
        meta="results/{experiment}/models/estimator_it{it}.json",
    log:
        "logs/{experiment}/train_estimator/it{it}.log",
    benchmark:
        "logs/{experiment}/benchmark/train_estimator/it{it}.tsv"
    conda:
        "../envs/dualrs.yaml"
    threads: 1
    resources:
        gpu=gpu,
        mem_mb=mem_mb,
        runtime=runtime,
    params:
        data=data_args,
        labels=lambda wc, input: " ".join(
            f"--labels {fmt(s)}={p}"
            for s, p in zip(candidate_sigmas(wc), input.labels)
        ),
        arch=model_arch("estimator"),
        options=model_options("estimator"),
        weights=weights_arg,
        optim=training_optim("estimator"),
        estimator=estimator_settings,
        targets=estimator_targets,
        sigma_e=sigma_e,
        denoiser=denoiser_arg,
        seed=estimator_seed,
        code=code("tasks"),
    shell:
        "dualrs train-estimator {params.data} {params.labels} --arch {params.arch} "
        "--model-options {params.options} {params.weights} --sigma-e {params.sigma_e} "
        "{params.targets} --lam {params.estimator[lam]} "
        "--eta {params.estimator[eta]} --copies {params.estimator[copies]} {params.optim} "
        "{params.denoiser} --seed {params.seed} --threads {threads} --out {output.model} > {log} 2>&1"

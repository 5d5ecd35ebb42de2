# Routing among expert RS models (Sun et al. 2025, Sec. 4.3): each expert certifies the training set
# (router labels) and the test set (its row alone); a router is trained like the variance estimator
# and certified with the expert it picks.


rule certify_expert:
    """Expert {expert} of the router certifies the {split} split, one shard (Sec. 4.3)."""
    input:
        unpack(expert_inputs),
        ready,
    output:
        "results/{experiment}/router/{split}/shards/{expert}_shard{shard}.tsv",
    log:
        "logs/{experiment}/certify_expert/{split}/{expert}_shard{shard}.log",
    benchmark:
        "logs/{experiment}/benchmark/certify_expert/{split}/{expert}_shard{shard}.tsv"
    wildcard_constraints:
        split="labels|certify",
    priority: 5  # a denoised-smoothing expert's labels are the longest job of the default DAG
    conda:
        "../envs/dualrs.yaml"
    threads: 1
    resources:
        gpu=gpu,
        mem_mb=mem_mb,
        runtime=runtime,
    params:
        data=data_args,
        command=lambda wc: "label" if wc.split == "labels" else "certify-global",
        sampling=expert_sampling_args,
        alpha=lambda wc: expert_settings(wc)["alpha"],
        sigma=lambda wc: expert(wc)["sigma"],
        denoiser=lambda wc, input: (
            f"--denoiser {input.denoiser}" if "denoiser" in input.keys() else ""
        ),
        seed=config["seed"],
        code=code("tasks"),
    shell:
        "dualrs {params.command} {params.data} --classifier {input.classifier} --sigma {params.sigma} "
        "{params.denoiser} {params.sampling} --alpha {params.alpha} --seed {params.seed} --threads {threads} "
        "--out {output} > {log} 2>&1"


rule train_router:
    """The router: a variance estimator over expert RS models, trained on the experts' radii (Sec. 4.3)."""
    input:
        ready,
        labels=lambda wc: [
            expert_table(wc.experiment, e, "labels")
            for e in router_experts(wc.experiment)
        ],
        denoiser=denoiser_input,
    output:
        model="results/{experiment}/models/router.safetensors",
        meta="results/{experiment}/models/router.json",
    log:
        "logs/{experiment}/train_router.log",
    benchmark:
        "logs/{experiment}/benchmark/train_router.tsv"
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
            f"--expert-labels {e['name']}={p}"
            for e, p in zip(router_experts(wc.experiment), input.labels)
        ),
        arch=model_arch("estimator"),
        options=model_options("estimator"),
        optim=training_optim("estimator"),
        estimator=estimator_settings,
        targets=estimator_targets,
        expert_sigmas=lambda wc: " ".join(
            f"--expert-sigma {e['name']}={e['sigma']}"
            for e in router_experts(wc.experiment)
        ),
        sigma_e=sigma_e,
        denoiser=denoiser_arg,
        seed=estimator_seed,
        code=code("tasks"),
    shell:
        "dualrs train-estimator {params.data} {params.labels} --arch {params.arch} "
        "--model-options {params.options} --sigma-e {params.sigma_e} "
        "{params.targets} {params.expert_sigmas} --lam {params.estimator[lam]} "
        "--eta {params.estimator[eta]} --copies {params.estimator[copies]} {params.optim} "
        "{params.denoiser} --seed {params.seed} --threads {threads} --out {output.model} > {log} 2>&1"


rule certify_router:
    """Routing among expert RS models on the test set, one shard: the router's pick certifies (Theorem 4.2)."""
    input:
        ready,
        router=rules.train_router.output.model,
        experts=lambda wc: [
            path
            for e in router_experts(wc.experiment)
            for path in (e["classifier"], e.get("denoiser"))
            if path
        ],
        denoiser=denoiser_input,
    output:
        "results/{experiment}/certify/shards/router_shard{shard}.tsv",
    log:
        "logs/{experiment}/certify_router/shard{shard}.log",
    benchmark:
        "logs/{experiment}/benchmark/certify_router/shard{shard}.tsv"
    conda:
        "../envs/dualrs.yaml"
    threads: 1
    resources:
        gpu=gpu,
        mem_mb=mem_mb,
        runtime=runtime,
    params:
        data=data_args,
        experts=lambda wc: " ".join(
            f"--expert {expert_json(e)}" for e in router_experts(wc.experiment)
        ),
        sigma_e=sigma_e,
        sampling=sampling_args("certify"),
        levels=certify_levels,
        denoiser=denoiser_arg,
        seed=config["seed"],
        code=code("tasks"),
    shell:
        "dualrs certify-router {params.data} --router {input.router} {params.experts} "
        "--sigma-e {params.sigma_e} {params.denoiser} {params.sampling} {params.levels} "
        "--seed {params.seed} --threads {threads} --out {output} > {log} 2>&1"

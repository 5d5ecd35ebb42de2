# Base models of round 0: noise-trained experts, one shared classifier, or off-the-shelf weights;
# and the diffusion denoiser when it is trained here.


rule train_classifier:
    """Base classifier f_sigma for noise sigma, trained on Gaussian-noised inputs (Cohen et al. 2019)."""
    input:
        ready,
    output:
        model="results/{experiment}/models/classifier_sigma{sigma}.safetensors",
        meta="results/{experiment}/models/classifier_sigma{sigma}.json",
    log:
        "logs/{experiment}/train_classifier/sigma{sigma}.log",
    benchmark:
        "logs/{experiment}/benchmark/train_classifier/sigma{sigma}.tsv"
    conda:
        "../envs/dualrs.yaml"
    threads: 1
    resources:
        gpu=gpu,
        mem_mb=mem_mb,
        runtime=runtime,
    params:
        data=data_args,
        arch=model_arch("classifier"),
        options=model_options("classifier"),
        noise=training_noise,
        optim=training_optim("classifier"),
        seed=config["seed"],
        code=code("tasks"),
    shell:
        "dualrs train-classifier {params.data} --arch {params.arch} --model-options {params.options} "
        "--sigma {params.noise} {params.optim} --seed {params.seed} --threads {threads} "
        "--out {output.model} > {log} 2>&1"


use rule train_classifier as train_shared_classifier with:
    """One base classifier for every sigma, trained under noise {noise}, behind the diffusion denoiser (Carlini et al. 2023)."""
    output:
        model="results/{experiment}/models/classifier_noise{noise}.safetensors",
        meta="results/{experiment}/models/classifier_noise{noise}.json",
    log:
        "logs/{experiment}/train_classifier/noise{noise}.log",
    benchmark:
        "logs/{experiment}/benchmark/train_classifier/noise{noise}.tsv"


use rule train_classifier as train_mixed_classifier with:
    """One base classifier for every sigma, each training input noised at a sigma drawn uniformly from Sigma."""
    output:
        model="results/{experiment}/models/classifier_mixed.safetensors",
        meta="results/{experiment}/models/classifier_mixed.json",
    log:
        "logs/{experiment}/train_classifier/mixed.log",
    benchmark:
        "logs/{experiment}/benchmark/train_classifier/mixed.tsv"


rule fetch_pretrained:
    """The off-the-shelf classifier's weights, read into a checkpoint for denoised smoothing (Carlini et al. 2023)."""
    input:
        weights=lambda wc: existing(
            exp(wc)["classifier"]["weights"], "classifier.weights", wc.experiment
        ),
        ready=ready,
    output:
        model="results/{experiment}/models/classifier_pretrained.safetensors",
        meta="results/{experiment}/models/classifier_pretrained.json",
    log:
        "logs/{experiment}/fetch_pretrained.log",
    benchmark:
        "logs/{experiment}/benchmark/fetch_pretrained.tsv"
    conda:
        "../envs/dualrs.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb,
        runtime=60,
    params:
        data=data_args,
        arch=model_arch("classifier"),
        options=model_options("classifier"),
        code=code("tasks"),
    shell:
        "dualrs fetch-pretrained {params.data} --arch {params.arch} --model-options {params.options} "
        "--weights {input.weights} --out {output.model} > {log} 2>&1"


rule train_denoiser:
    """A diffusion denoiser (DDPM), trained here for denoised smoothing of the embedded data."""
    input:
        ready,
    output:
        directory("results/{experiment}/models/denoiser"),
    log:
        "logs/{experiment}/train_denoiser.log",
    benchmark:
        "logs/{experiment}/benchmark/train_denoiser.tsv"
    priority: 10  # first on the critical path: every denoised-smoothing job waits for it
    conda:
        "../envs/dualrs.yaml"
    threads: 1
    resources:
        gpu=gpu,
        mem_mb=mem_mb,
        runtime=runtime,
    params:
        data=data_args,
        train=lambda wc: exp(wc)["denoiser"]["train"],
        seed=config["seed"],
        code=code("tasks"),
    shell:
        "dualrs train-denoiser {params.data} --steps {params.train[steps]} "
        "--batch-size {params.train[batch_size]} --lr {params.train[lr]} --seed {params.seed} "
        "--threads {threads} --out {output} > {log} 2>&1"

# Runs where snakemake runs, never as a cluster job: it writes small files (digits, ImageNet file
# lists) or downloads CIFAR-10, which compute nodes often cannot.
localrules:
    prepare_data,


rule prepare_data:
    """Dataset {data}: its training and test splits, written once in a stable on-disk form."""
    output:
        "data/{data}/READY",
    log:
        "logs/prepare_data/{data}.log",
    benchmark:
        "logs/prepare_data/benchmark/{data}.tsv"
    conda:
        "../envs/dualrs.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        options=lambda wc: shlex.quote(json.dumps(config["data"].get(wc.data, {}))),
        seed=config["seed"],
        code=code("tasks"),
    shell:
        "dualrs prepare-data --dataset {wildcards.data} --root data/{wildcards.data} "
        "--data-options {params.options} --seed {params.seed} > {log} 2>&1"

# One table (csv/md/tex) and one figure folder per experiment.


rule report:
    input:
        global_tables=lambda wc: [f"results/{wc.experiment}/certify/global/sigma{fmt(s)}.tsv" for s in sigmas(wc.experiment)],
        dual_tables=lambda wc: [f"results/{wc.experiment}/certify/dual/it{it}.tsv" for it in dual_names(wc.experiment)],
    output:
        table="results/tables/{experiment}.csv",
        markdown="results/tables/{experiment}.md",
        latex="results/tables/{experiment}.tex",
        figures=directory("results/figures/{experiment}"),
    params:
        global_args=lambda wc, input: " ".join(f"--global {fmt(s)}={p}" for s, p in zip(sigmas(wc.experiment), input.global_tables)),
        dual_args=lambda wc, input: " ".join(
            shlex.quote(f"--dual={name}={path}") for name, path in zip(dual_names(wc.experiment).values(), input.dual_tables)
        ),
        radii=lambda wc: " ".join(str(r) for r in radii(wc.experiment)),
    log:
        "logs/{experiment}/report.log",
    benchmark:
        "logs/{experiment}/benchmark/report.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/dualrs.yaml"
    shell:
        "dualrs report {params.global_args} {params.dual_args} --radii {params.radii} "
        "--title {wildcards.experiment} --table {output.table} --figures {output.figures} > {log} 2>&1"

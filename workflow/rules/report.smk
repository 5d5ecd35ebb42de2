# One table (csv/md/tex/json + the curves as csv) and one figure folder per experiment.


localrules:
    report,


rule report:
    input:
        global_tables=lambda wc: [f"results/{wc.experiment}/certify/global/sigma{fmt(s)}.tsv" for s in sigmas(wc.experiment)],
        rows=lambda wc: [path for _, _, path in report_rows(wc.experiment)],
    output:
        table="results/tables/{experiment}.csv",
        markdown="results/tables/{experiment}.md",
        latex="results/tables/{experiment}.tex",
        metrics="results/tables/{experiment}.json",
        curves="results/tables/{experiment}_curve.csv",
        figures=directory("results/figures/{experiment}"),
    params:
        global_args=lambda wc, input: " ".join(f"--global {fmt(s)}={p}" for s, p in zip(sigmas(wc.experiment), input.global_tables)),
        row_args=lambda wc: " ".join(shlex.quote(f"{flag}={name}={path}") for flag, name, path in report_rows(wc.experiment)),
        radii=lambda wc: " ".join(str(r) for r in radii(wc.experiment)),
    log:
        "logs/{experiment}/report.log",
    benchmark:
        "logs/{experiment}/benchmark/report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/dualrs.yaml"
    shell:
        "dualrs report {params.global_args} {params.row_args} --radii {params.radii} "
        "--title {wildcards.experiment} --table {output.table} --figures {output.figures} > {log} 2>&1"

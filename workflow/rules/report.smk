# One table (csv/md/tex/json + the curves as csv) and one figure folder per experiment, with the share
# of the oracle's headroom each non-global row captures (_headroom), how often each row that chooses
# (oracle, cascades, dual RS, router) chose each sigma or expert (_choices) and the comparison with the paper's
# numbers (_vs_paper: empty, with a note, for an experiment without published numbers in
# dualrs/published_numbers.yaml; the figure vs_paper only where there are some).
# `snakemake --report report.html` holds the table, headroom, choices and vs_paper tables (each rendered in its
# description, workflow/report/*.rst) and the PNG figures, under the experiment's category.


localrules:
    report,


rule report:
    """Tables, oracle, headroom, choices, comparison with the published numbers and figures of experiment {experiment}."""
    input:
        global_tables=lambda wc: [
            f"results/{wc.experiment}/certify/global/sigma{fmt(s)}.tsv"
            for s in sigmas(wc.experiment)
        ],
        rows=lambda wc: [path for _, _, path in report_rows(wc.experiment)],
    output:
        table=report(
            "results/tables/{experiment}.csv",
            caption="../report/table.rst",
            category="{experiment}",
            subcategory="Tables",
            labels={"table": "certified accuracy"},
        ),
        markdown="results/tables/{experiment}.md",
        latex="results/tables/{experiment}.tex",
        metrics="results/tables/{experiment}.json",
        curves="results/tables/{experiment}_curve.csv",
        headroom=report(
            "results/tables/{experiment}_headroom.csv",
            caption="../report/headroom.rst",
            category="{experiment}",
            subcategory="Tables",
            labels={"table": "headroom share"},
        ),
        headroom_markdown="results/tables/{experiment}_headroom.md",
        choices=report(
            "results/tables/{experiment}_choices.csv",
            caption="../report/choices.rst",
            category="{experiment}",
            subcategory="Tables",
            labels={"table": "choices"},
        ),
        choices_markdown="results/tables/{experiment}_choices.md",
        vs_paper=report(
            "results/tables/{experiment}_vs_paper.csv",
            caption="../report/vs_paper.rst",
            category="{experiment}",
            subcategory="Tables",
            labels={"table": "vs paper"},
        ),
        vs_paper_markdown="results/tables/{experiment}_vs_paper.md",
        figures=report(
            directory("results/figures/{experiment}"),
            patterns=["{name}.png"],
            caption="../report/figure.rst",
            category="{experiment}",
            subcategory="Figures",
            labels={"figure": "{name}"},
        ),
    log:
        "logs/{experiment}/report.log",
    benchmark:
        "logs/{experiment}/benchmark/report.tsv"
    conda:
        "../envs/dualrs.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        global_args=lambda wc, input: " ".join(
            f"--global {fmt(s)}={p}"
            for s, p in zip(sigmas(wc.experiment), input.global_tables)
        ),
        row_args=lambda wc: " ".join(
            shlex.quote(f"{flag}={name}={path}")
            for flag, name, path in report_rows(wc.experiment)
        ),
        radii=radii_args,
        code=code("report"),
    shell:
        "dualrs report {params.global_args} {params.row_args} --radii {params.radii} "
        "--title {wildcards.experiment} --table {output.table} --figures {output.figures} "
        "--published {wildcards.experiment} > {log} 2>&1"

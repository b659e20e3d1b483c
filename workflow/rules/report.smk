# The paper's tables and figures: local jobs that read only small metric files (dicewf/paper/
# says which), so deleting one and asking for it again reruns only its own job, in seconds.
# `snakemake --report report.html` makes one HTML page of them, captions included.


rule table:
    """A table of the paper (table1..table10, paper_vs_reproduced) as CSV, Markdown and LaTeX."""
    input:
        unpack(table_inputs),
    output:
        csv="results/tables/{table}.csv",
        md=report(
            "results/tables/{table}.md",
            caption="../report/caption.rst",
            category="Paper",
            subcategory="Tables",
            labels={"name": "{table}"},
        ),
        tex="results/tables/{table}.tex",
    log:
        "logs/report/{table}.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        table="{table}",
        layout=LAYOUT_PARAM,
        caption=lambda w: caption_of(w.table),
    script:
        "../scripts/report_tables.py"


rule figure:
    """A figure of the paper (figure1..figure5) as PNG and PDF."""
    input:
        unpack(figure_inputs),
    output:
        png=report(
            "results/figures/{figure}.png",
            caption="../report/caption.rst",
            category="Paper",
            subcategory="Figures",
            labels={"name": "{figure}"},
        ),
        pdf="results/figures/{figure}.pdf",
    log:
        "logs/report/{figure}.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        figure="{figure}",
        layout=LAYOUT_PARAM,
        bins=lambda w: config["report"]["figure2"]["bins"] if w.figure == "figure2" else None,
        caption=lambda w: caption_of(w.figure),
    script:
        "../scripts/report_figures.py"

# The paper's tables and figures: local jobs that read only small metric files (dicewf/paper/
# says which), so deleting one and asking for it again reruns only its own job, in seconds.
# `snakemake --report report.html` makes one HTML page of them, captions included.


rule table:
    """A table of the paper (table1..table10, paper_vs_reproduced) or of SeRA (sera_table1,
    sera_table2, sera_table9, sera_table_noise, dice_vs_sera) as CSV, Markdown and LaTeX."""
    input:
        unpack(table_inputs),
    output:
        csv=f"{OWN}/tables/{{table}}.csv",
        md=report(
            f"{OWN}/tables/{{table}}.md",
            caption="../report/caption.rst",
            category="Paper",
            subcategory="Tables",
            labels={"name": "{table}"},
        ),
        tex=f"{OWN}/tables/{{table}}.tex",
    log:
        f"{OWN_LOGS}/report/{{table}}.log",
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
            f"{OWN}/figures/{{figure}}.png",
            caption="../report/caption.rst",
            category="Paper",
            subcategory="Figures",
            labels={"name": "{figure}"},
        ),
        pdf=f"{OWN}/figures/{{figure}}.pdf",
    log:
        f"{OWN_LOGS}/report/{{figure}}.log",
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


if TOY_EVAL:

    rule claims:
        """The paper's qualitative claims (dicewf/paper/claims.yaml) with the reproduced effect,
        its paired-bootstrap interval over the evaluation prompts and a verdict. Reads the
        per-prompt judgements of the models each claim compares (toy suite only)."""
        input:
            **paper.claims.input_paths(LAYOUT, root=OWN),
        output:
            csv=f"{OWN}/tables/claims.csv",
            md=report(
                f"{OWN}/tables/claims.md",
                caption="../report/caption.rst",
                category="Paper",
                subcategory="Tables",
                labels={"name": "claims"},
            ),
            tex=f"{OWN}/tables/claims.tex",
        log:
            f"{OWN_LOGS}/report/claims.log",
        localrule: True
        conda:
            "../../envs/analysis.yaml"
        params:
            layout=LAYOUT_PARAM,
            l2=config["eval"]["l2"],
            intervals=seeded(config["eval"]["intervals"], after=None),
            caption=caption_of("claims"),
        script:
            "../scripts/report_claims.py"

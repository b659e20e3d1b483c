# SeRA's Figures 2-6 on the toy world (docs/sera.md#figures, dicewf.paper.sera_figures): which
# SeRA run fills which point follows from its sera block; each figure reads only small files.


rule sera_trained_logps:
    """Figure 3's learned implicit rewards: every D_offline pair (the experiment's, noisy where
    it swaps labels) scored under pi_theta^(t), the policy iteration t trained, and its train
    reference (dicewf.reflogps.pair_logps, as sera_offline_logps scores)."""
    input:
        policy=lambda w: policy_of(w.exp, int(w.iter)),
        ref=lambda w: reference_of(w.exp, int(w.iter)),
        pairs=experiment_offline,
    output:
        logps=ensure("results/{exp}/iter{iter}/trained_logps.parquet", non_empty=True),
    log:
        "logs/{exp}/iter{iter}/sera_trained_logps.log",
    benchmark:
        "results/benchmarks/{exp}/iter{iter}/sera_trained_logps.tsv"
    wildcard_constraints:
        exp=cfg.alternation(SERA_EXPERIMENTS),
    conda:
        "../../envs/training.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=64000,
        runtime=60,
        cpus_per_task=8,
    params:
        score=lambda w: {k: xp(w)["score"][k] for k in ("max_tokens_per_batch", "dtype")},
    script:
        "../scripts/sera_offline_logps.py"


rule sera_figure:
    """SeRA's Figure n (2-6) as PNG and PDF, from metrics.json, selection.json,
    offline_selection.parquet and trained_logps.parquet of the runs that fill it."""
    input:
        unpack(sera_figure_inputs),
    output:
        png=report(
            f"{OWN}/figures/sera_figure{{n}}.png",
            caption="../report/caption.rst",
            category="Paper",
            subcategory="SeRA figures",
            labels={"name": "sera_figure{n}"},
        ),
        pdf=f"{OWN}/figures/sera_figure{{n}}.pdf",
    log:
        f"{OWN_LOGS}/report/sera_figure{{n}}.log",
    wildcard_constraints:
        n="[2-6]",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        figure=lambda w: f"sera_figure{w.n}",
        layout=SERA_LAYOUT_PARAM,
        caption=lambda w: caption_of(f"sera_figure{w.n}"),
    script:
        "../scripts/report_sera_figures.py"

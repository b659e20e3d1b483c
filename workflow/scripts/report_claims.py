"""Snakemake adapter: the claims table (dicewf.paper.claims) from per-prompt judgements.

params: layout (Layout.to_dict()), l2 (the LC GLM's), intervals (n_bootstrap, level, seed),
caption. Inputs as dicewf.paper.claims.input_paths(layout) names them.
"""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import logs, paper, report

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
layout = paper.Layout.from_dict(snakemake.params.layout)
data = paper.claims.read_inputs(layout, snakemake.input)
boot = snakemake.params.intervals
df = paper.claims.build(
    layout,
    data["judgements"],
    data["tuples"],
    l2=snakemake.params.l2,
    n_bootstrap=boot["n_bootstrap"],
    level=boot["level"],
    seed=boot["seed"],
)
out = snakemake.output
report.write_table(
    df, out.csv, out.md, caption=snakemake.params.caption, tex=out.tex, label="tab:claims"
)
print(report.to_markdown(df))

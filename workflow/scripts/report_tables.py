"""Snakemake adapter: one of the paper's tables (or paper_vs_reproduced) from metric files.

params: table (a name from dicewf.paper.TABLES or "paper_vs_reproduced"), layout
(Layout.to_dict()), caption. Inputs as dicewf.paper.input_paths(table, layout) names them.
"""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import logs, paper, report

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
name = snakemake.params.table
layout = paper.Layout.from_dict(snakemake.params.layout)
data = paper.read_inputs(name, layout, snakemake.input)
df = paper.build_table(
    name, layout, data["metrics"], data["alphas"], data["agreement"], data["selections"]
)
out = snakemake.output
report.write_table(
    df, out.csv, out.md, caption=snakemake.params.caption, tex=out.tex, label=f"tab:{name}"
)

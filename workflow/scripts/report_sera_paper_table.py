"""Snakemake adapter: SeRA's Table 1, 2 or 9 at paper scale from its evaluation's metrics.

params: table (a name of dicewf.paper.sera_paper_tables.TABLES), rows (its rows), benchmarks
(eval.sera.benchmarks), caption. input.metrics: sera_paper_tables.input_paths(rows).
"""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import logs, report
from dicewf.paper import sera_paper_tables

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
rows = snakemake.params.rows
metrics = sera_paper_tables.read_metrics(rows, list(snakemake.input.metrics))
name = snakemake.params.table
df = sera_paper_tables.build(name, rows, metrics, snakemake.params.benchmarks)
out = snakemake.output
report.write_table(
    df, out.csv, out.md, caption=snakemake.params.caption, tex=out.tex, label=f"tab:{name}"
)

"""Snakemake adapter: one of the paper's figures from metric, alpha and landscape files.

params: figure (a name from dicewf.paper.FIGURES), layout (Layout.to_dict()), bins (Figure 2's,
None for the others). Inputs as dicewf.paper.input_paths(figure, layout) names them; outputs png
and pdf.
"""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import logs, paper

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
name = snakemake.params.figure
layout = paper.Layout.from_dict(snakemake.params.layout)
data = paper.read_inputs(name, layout, snakemake.input)
paper.draw_figure(
    name, layout, data, snakemake.output.png, snakemake.output.pdf, bins=snakemake.params.bins
)

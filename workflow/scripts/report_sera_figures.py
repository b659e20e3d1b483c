"""Snakemake adapter: one of SeRA's figures (dicewf.paper.sera_figures); the numbers drawn go
to the job's log."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import logs
from dicewf.paper import sera_figures

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
name = snakemake.params.figure
layout = sera_figures.SeraLayout.from_dict(snakemake.params.layout)
data = sera_figures.read_inputs(name, layout, snakemake.input)
drawn = sera_figures.draw(name, layout, data, snakemake.output.png, snakemake.output.pdf)
for part, frame in (drawn if isinstance(drawn, dict) else {name: drawn}).items():
    print(f"{part}:\n{frame.to_string()}")

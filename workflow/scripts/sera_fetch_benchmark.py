"""Snakemake adapter: fetch a SeRA benchmark's question file (Vicuna, Evol-Instruct)."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import logs, sera_eval

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
print(sera_eval.fetch(snakemake.params.url, snakemake.output.questions))

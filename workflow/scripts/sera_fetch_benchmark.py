"""Snakemake adapter: fetch a SeRA benchmark's question file (Vicuna, Evol-Instruct)."""

from typing import TYPE_CHECKING

from dicewf import logs, sera_eval

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
print(sera_eval.fetch(snakemake.params.url, snakemake.output.questions))

"""Snakemake adapter: fetch AlpacaEval 2's length-control data into its own cache folder."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import alpacaeval, logs
from dicewf.io import atomic_path

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
with atomic_path(snakemake.output.cache, is_dir=True) as tmp:
    print(alpacaeval.prefetch_lc_data(tmp))

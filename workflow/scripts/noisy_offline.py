"""Snakemake adapter: D_offline with a share of its labels swapped, seeded (dicewf.sera)."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import logs
from dicewf.io import read_parquet, write_parquet
from dicewf.sera import swap_labels

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
source = snakemake.input.offline
pairs = read_parquet(source, "pairs")
noisy = swap_labels(pairs, snakemake.params.fraction, snakemake.params.seed, source=source)
write_parquet(noisy, snakemake.output.offline)

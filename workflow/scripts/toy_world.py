"""Snakemake adapter: generate the toy world's datasets."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import logs, toyworld
from dicewf.io import write_parquet

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
spec = toyworld.WorldSpec.from_dict(snakemake.params.world)
out = snakemake.output
for name, df in toyworld.build_world(spec).items():
    write_parquet(df, out[name])

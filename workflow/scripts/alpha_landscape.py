"""Snakemake adapter: Figure 4's objective landscape from an iteration's cached scores."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import alpha, logs
from dicewf.io import read_json, read_parquet, write_parquet

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
source = snakemake.input.scores
scores = read_parquet(source, "rewards", finite=("len_chars", "len_tokens"))
land = alpha.figure4_landscape(
    scores,
    read_json(snakemake.input.alpha),
    snakemake.params.alpha,
    points=snakemake.params.points,
    source=source,
)
write_parquet(land, snakemake.output.landscape)
print(f"{snakemake.output.landscape}: {len(land)} points")

"""Snakemake adapter: concatenate the shards' samples or rewards in shard order."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import logs
from dicewf.io import read_parquet, write_parquet
from dicewf.sharding import gather

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
for kind, paths in snakemake.input.items():
    # implicit-reward and LLM-as-a-Judge scores share the `rewards` columns
    schema = "samples" if kind == "samples" else "rewards"
    frames = [read_parquet(p, schema) for p in paths]
    write_parquet(gather(frames, list(paths)), snakemake.output[kind])

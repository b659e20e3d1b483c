"""Snakemake adapter: a model's SeRA metrics on every benchmark, keyed by benchmark."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import logs
from dicewf.io import read_json, write_json

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
write_json(
    {bench: read_json(path) for bench, path in snakemake.input.items()}, snakemake.output.metrics
)

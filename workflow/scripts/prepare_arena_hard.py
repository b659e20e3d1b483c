"""Snakemake adapter: Arena-Hard v0.1 questions with the baseline model's answers as references."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import datasets, logs
from dicewf.io import write_parquet

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
prompts = datasets.prepare_arena_hard(snakemake.input.snapshot, baseline=snakemake.params.baseline)
write_parquet(prompts, snakemake.output.eval_set)

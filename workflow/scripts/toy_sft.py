"""Snakemake adapter: supervised fine-tuning of the toy model (pi_ref^(0))."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import jobs, logs
from dicewf.io import read_parquet
from dicewf.training import train_sft

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
jobs.set_threads(snakemake.threads)  # torch's pool: the job's threads, logged
jobs.deterministic()  # torch's deterministic algorithms, before training
demos = read_parquet(snakemake.input.demos)
train_sft(
    snakemake.input.model,
    demos,
    snakemake.output.model,
    snakemake.params.args,
    seed=snakemake.params.seed,
    metrics_path=snakemake.output.metrics,
    source=snakemake.input.demos,
)

"""Snakemake adapter: the internal reward model (IntlRM, Table 5), trained on its pairs only."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import jobs, logs
from dicewf.io import read_parquet
from dicewf.reward_model import train_reward_model

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
jobs.set_threads(snakemake.threads)  # torch's pool: the job's threads, logged
jobs.deterministic()  # torch's deterministic algorithms, before training
pairs = read_parquet(snakemake.input.pairs, "pairs")
train_reward_model(
    snakemake.input.model,
    pairs,
    snakemake.output.model,
    snakemake.params.args,
    seed=snakemake.params.seed,
    metrics_path=snakemake.output.metrics,
    source=snakemake.input.pairs,
)

"""Snakemake adapter: SeRA's Eq. 7 for the bootstrapped pairs, the iteration's scored samples
scored again under pi_theta^(t-2) against its reference (dicewf.scoring.score)."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import jobs, logs, model_files
from dicewf.io import read_parquet, write_parquet
from dicewf.scoring import score

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
jobs.set_threads(snakemake.threads)  # torch's pool: the job's threads, logged
for role in ("policy", "reference"):  # a model in each folder, else named with its role
    model_files.model_dir(snakemake.input[role], f"input {role} of rule {snakemake.rule}")
source = snakemake.input.scores
# the score stage's responses (filtered already: the filters keep them all) under the older pair
scores = score(
    read_parquet(source, "rewards"),
    snakemake.input.policy,
    snakemake.input.reference,
    beta=snakemake.params.beta,
    source=source,
    engine=snakemake.params.engine,
    **snakemake.params.score,
)
write_parquet(scores, snakemake.output.scores)
jobs.exit_now()  # outputs written: skip the interpreter's teardown of torch and vLLM

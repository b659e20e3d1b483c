"""Snakemake adapter: implicit rewards of the samples (policy t-1 against reference t-1)."""

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
samples = read_parquet(snakemake.input.samples, "samples")
scores = score(
    samples,
    snakemake.input.policy,
    snakemake.input.reference,
    beta=snakemake.params.beta,
    source=snakemake.input.samples,
    engine=snakemake.params.engine,
    **snakemake.params.score,
)
write_parquet(scores, snakemake.output.scores)
jobs.exit_now()  # outputs written: skip the interpreter's teardown of torch and vLLM

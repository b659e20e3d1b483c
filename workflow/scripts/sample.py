"""Snakemake adapter: K responses per prompt from the current policy."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import jobs, logs, model_files
from dicewf.io import read_parquet, write_parquet
from dicewf.sampling import sample
from dicewf.sharding import parse_scatteritem, shard

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
jobs.set_threads(snakemake.threads)  # torch's pool: the job's threads, logged
model_files.model_dir(snakemake.input.policy, f"input policy of rule {snakemake.rule}")
index, count = parse_scatteritem(snakemake.wildcards.scatteritem)
prompts = shard(read_parquet(snakemake.input.prompts, "prompts"), index, count)
samples = sample(
    snakemake.input.policy,
    prompts,
    snakemake.params.sampling,
    backend=snakemake.params.backend,
    engine=snakemake.params.engine,
    source=snakemake.input.prompts,
)
write_parquet(samples, snakemake.output.samples)
jobs.exit_now()  # outputs written: skip the interpreter's teardown of torch and vLLM

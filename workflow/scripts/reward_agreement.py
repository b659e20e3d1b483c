"""Snakemake adapter: agreement of the implicit reward with the judge (Table 5 analogue)."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import jobs, logs
from dicewf.io import read_parquet, write_json
from dicewf.scoring import implicit_reward_agreement

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
jobs.set_threads(snakemake.threads)  # torch's pool: the job's threads, logged
pairs = read_parquet(snakemake.input.pairs)
result = implicit_reward_agreement(
    pairs,
    snakemake.input.policy,
    snakemake.input.reference,
    beta=snakemake.params.beta,
    max_tokens_per_batch=snakemake.params.max_tokens_per_batch,
    source=snakemake.input.pairs,
)
result["target"] = snakemake.params.target
result["meets_target"] = result["agreement"] >= snakemake.params.target
write_json(result, snakemake.output.metrics)
print(result)

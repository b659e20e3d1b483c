"""Snakemake adapter: D_offline's log-probs under SeRA's scoring models (dicewf.reflogps)."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import jobs, logs, model_files
from dicewf.io import read_parquet, write_parquet
from dicewf.reflogps import pair_logps

if TYPE_CHECKING:
    from snakemake.script import snakemake

ROLES = ("policy", "ref", "policy2", "ref2")  # sera_models in common.smk; dicewf.sera's columns

logs.to_file(snakemake.log[0])
jobs.set_threads(snakemake.threads)  # torch's pool: the job's threads, logged
models = {r: snakemake.input[r] for r in ROLES if r in snakemake.input.keys()}
for role, path in models.items():  # a model in each folder, else named with its role
    model_files.model_dir(path, f"input {role} of rule {snakemake.rule}")
source = snakemake.input.pairs
pairs = read_parquet(source, "pairs").reset_index(drop=True)
logps = pair_logps(
    pairs,
    snakemake.input.policy,  # the tokenizer the train job tokenizes with
    models,
    source=source,
    desc="offline log-probs",
    **snakemake.params.score,
)
write_parquet(pairs.join(logps), snakemake.output.logps)
jobs.exit_now()  # outputs written: skip the interpreter's teardown of torch and vLLM

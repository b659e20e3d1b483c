"""Snakemake adapter: every mixed pair with its log-probs under the train reference (the rows
that lack them scored once, as TRL tokenizes; dicewf.reflogps.fill)."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import jobs, logs, model_files
from dicewf.io import read_parquet, write_parquet
from dicewf.reflogps import fill

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
jobs.set_threads(snakemake.threads)  # torch's pool: the job's threads, logged
for role in ("policy", "reference"):  # a model in each folder, else named with its role
    model_files.model_dir(snakemake.input[role], f"input {role} of rule {snakemake.rule}")
pairs = read_parquet(snakemake.input.pairs, "mixed")
out = fill(
    pairs,
    snakemake.input.policy,  # the tokenizer the train job tokenizes with
    snakemake.input.reference,
    source=snakemake.input.pairs,
    **snakemake.params.score,
)
write_parquet(out, snakemake.output.pairs)
jobs.exit_now()  # outputs written: skip the interpreter's teardown of torch and vLLM

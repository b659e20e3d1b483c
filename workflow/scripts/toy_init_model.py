"""Snakemake adapter: train the toy tokenizer and randomly initialise the tiny Llama."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import jobs, logs, toymodel, toyworld
from dicewf.io import atomic_path, read_parquet

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
jobs.set_threads(snakemake.threads)  # torch's pool: the job's threads, logged
params = dict(snakemake.params.model)
vocab_size = params.pop("vocab_size")
tasks = toyworld.tasks_from_frame(read_parquet(snakemake.input.train_prompts, "prompts")).values()
with atomic_path(snakemake.output.model, is_dir=True) as tmp:
    toymodel.train_tokenizer(
        toyworld.corpus(list(tasks), snakemake.params.world_seed), vocab_size, tmp / "tokenizer"
    )
    toymodel.init_model(tmp / "tokenizer", tmp, **params)

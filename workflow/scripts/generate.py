"""Snakemake adapter: one answer per benchmark prompt from the model (its chat template).

Every input but ``policy`` is a benchmark's prompt set; all of them go through one generation
run (one model load) and the answers are written per benchmark to the output of the same name.
Used by DICE's `generate_benchmarks` and SeRA's `sera_generate` (its param ``prompt_schema``:
the prompt sets' schema, ``eval_prompts`` where not given).
"""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import jobs, logs, model_files
from dicewf.io import read_parquet, write_parquet
from dicewf.sampling import sample_sets

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
jobs.set_threads(snakemake.threads)  # torch's pool: the job's threads, logged
model_files.model_dir(snakemake.input.policy, f"input policy of rule {snakemake.rule}")
schema = getattr(snakemake.params, "prompt_schema", "eval_prompts")
sets = {
    name: read_parquet(path, schema) for name, path in snakemake.input.items() if name != "policy"
}
answers = sample_sets(
    snakemake.input.policy,
    sets,
    snakemake.params.sampling,
    backend=snakemake.params.backend,
    engine=snakemake.params.engine,
)
for name, responses in answers.items():
    write_parquet(responses, snakemake.output[name])
jobs.exit_now()  # outputs written: skip the interpreter's teardown of torch and vLLM

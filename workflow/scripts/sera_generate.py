"""Snakemake adapter: one answer per SeRA benchmark prompt from the model (its chat template).

Every input but ``policy`` is a benchmark's prompt set; all go through one generation run (one
model load) and the answers are written per benchmark to the output of the same name.
"""

from typing import TYPE_CHECKING

from dicewf import jobs, logs, model_files
from dicewf.io import read_parquet, write_parquet
from dicewf.sampling import sample_sets

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
jobs.set_threads(snakemake.threads)
model_files.model_dir(snakemake.input.policy, f"input policy of rule {snakemake.rule}")
sets = {
    name: read_parquet(path, "prompts")
    for name, path in snakemake.input.items()
    if name != "policy"
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

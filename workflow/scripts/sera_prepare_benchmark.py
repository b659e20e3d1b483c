"""Snakemake adapter: a SeRA benchmark's prompts from its snapshot or question file."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import logs, sera_eval
from dicewf.io import write_parquet

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
bench = snakemake.params.bench
kwargs = {"split": snakemake.params.split} if bench == "ultrafeedback" else {}
prompts = sera_eval.prepare_benchmark(bench, snakemake.input.source, **kwargs)
write_parquet(prompts, snakemake.output.prompts)

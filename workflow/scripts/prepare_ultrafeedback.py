"""Snakemake adapter: D_offline (a seeded subset of UltraFeedback pairs) and its prompt set, or
(n_pairs None, no prompts output) every usable pair."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import datasets, logs
from dicewf.io import write_parquet

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
offline, prompts = datasets.prepare_ultrafeedback(
    snakemake.input.snapshot,
    split=snakemake.params.split,
    n_pairs=snakemake.params.n_pairs,
    seed=snakemake.params.seed,
)
write_parquet(offline, snakemake.output.offline)
if hasattr(snakemake.output, "prompts"):  # prepare_ultrafeedback_all writes the pairs alone
    write_parquet(prompts, snakemake.output.prompts)

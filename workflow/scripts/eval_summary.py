"""Snakemake adapter: merge a model's AlpacaEval 2 and Arena-Hard metrics into one file."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import logs
from dicewf.io import read_json, write_json

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
alpaca = read_json(snakemake.input.alpaca_eval)
# Arena-Hard keys carry an arena_ prefix (arena_score, arena_ci_low, arena_ci_high, arena_n)
arena = {
    k if k.startswith("arena_") else f"arena_{k}": v
    for k, v in read_json(snakemake.input.arena_hard).items()
}
write_json({**alpaca, **arena}, snakemake.output.metrics)

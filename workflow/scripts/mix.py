"""Snakemake adapter: experience replay, D_t = (1 - gamma) D(alpha*) + gamma D_offline."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

import pandas as pd
from dicewf import logs
from dicewf.io import read_parquet, write_parquet
from dicewf.mixing import PAIR_COLUMNS, iteration_seed, mix

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
p = snakemake.params.mix
# with gamma = 1 the rule gets no generated pairs (nothing was sampled)
generated = (
    read_parquet(snakemake.input.pairs)
    if "pairs" in snakemake.input.keys()
    else pd.DataFrame({c: pd.Series(dtype=str) for c in PAIR_COLUMNS})
)
mixed = mix(
    generated,
    read_parquet(snakemake.input.offline),
    gamma=p["gamma"],
    n_pairs=p["n_pairs"],
    # a new offline/generated split every iteration (the DICE code draws one per round)
    seed=iteration_seed(p["seed"], snakemake.params.iteration),
    shortfall=p["shortfall"],
    generated_source=snakemake.input.get("pairs", "<none: gamma = 1>"),
    offline_source=snakemake.input.offline,
)
write_parquet(mixed, snakemake.output.mixed)

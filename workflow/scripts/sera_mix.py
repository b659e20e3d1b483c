"""Snakemake adapter: SeRA's D_t, the offline pairs selected by IRM and the bootstrapped pairs
(dicewf.sera.select_offline, mix_iteration)."""

from typing import TYPE_CHECKING

from dicewf import logs
from dicewf.io import read_parquet, write_json, write_parquet
from dicewf.mixing import iteration_seed
from dicewf.sera import mix_iteration, select_offline

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
p = snakemake.params.sera
source = snakemake.input.offline
selection, report = select_offline(
    read_parquet(source),
    snakemake.params.beta,
    p["selection_proportion"],
    p["ensemble_lambda"],
    selection=p["selection"],
    source=source,
)
mixed, counts = mix_iteration(
    selection,
    read_parquet(snakemake.input.scores, "rewards"),
    proportion=p["selection_proportion"],
    generated=p["generated_proportion"],
    seed=iteration_seed(snakemake.params.seed, snakemake.params.iteration),
    ref_logps=snakemake.params.ref_logps,
    selection=p["selection"],
    offline_source=source,
    scores_source=snakemake.input.scores,
)
write_parquet(selection, snakemake.output.selection)
write_parquet(mixed, snakemake.output.mixed)
write_json({**report, **counts}, snakemake.output.report, allow_nan=False)
print(report)

"""Snakemake adapter: SeRA's D_t, the offline pairs selected by IRM and the bootstrapped pairs
(dicewf.sera.select_offline, mix_iteration)."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

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
    reward=snakemake.params.reward,
    source=source,
)
# the samples scored under pi_theta^(t-2) too: Eq. 7 for the bootstrapped pairs
prev2 = snakemake.input.scores_prev2 if "scores_prev2" in snakemake.input.keys() else None
# sera.bootstrap dice_alpha: search_alpha's D(alpha*) are the candidate pairs
pairs = snakemake.input.pairs if "pairs" in snakemake.input.keys() else None
mixed, counts = mix_iteration(
    selection,
    read_parquet(snakemake.input.scores, "rewards"),
    proportion=p["selection_proportion"],
    generated=p["generated_proportion"],
    seed=iteration_seed(snakemake.params.seed, snakemake.params.iteration),
    ref_logps=snakemake.params.ref_logps,
    selection=p["selection"],
    scores_prev2=None if prev2 is None else read_parquet(prev2, "rewards"),
    lam=p["ensemble_lambda"],
    candidates=None if pairs is None else read_parquet(pairs, "pairs"),
    reward=snakemake.params.reward,
    beta=snakemake.params.beta,
    offline_source=source,
    scores_source=snakemake.input.scores,
    scores_prev2_source=prev2 or "<scores prev2>",
    candidates_source=pairs or "<pairs>",
)
write_parquet(selection, snakemake.output.selection)
write_parquet(mixed, snakemake.output.mixed)
write_json({**report, **counts}, snakemake.output.report, allow_nan=False)
print(report)

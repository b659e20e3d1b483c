"""Snakemake adapter: alpha* of Eq. 6 (log-ratio scale) and D(alpha*) (Algorithm 1 line 4)."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import alpha as search
from dicewf import logs
from dicewf.io import read_parquet, write_json, write_parquet

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
source = snakemake.input.scores
scores = read_parquet(source, "rewards", finite=("len_chars", "len_tokens"))
# the scores column of the train reference's log-probs, carried into the pairs (None: none)
out = search.run_search(
    scores, snakemake.params.alpha, source=source, ref_logps=snakemake.params.ref_logps
)
write_parquet(out.length_diffs, snakemake.output.length_diffs)
write_parquet(out.pairs, snakemake.output.pairs)
write_json(out.result, snakemake.output.alpha, allow_nan=False)  # valid JSON: null, never NaN
print(out.result)

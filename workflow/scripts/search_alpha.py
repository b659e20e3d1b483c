"""Snakemake adapter: alpha* of Eq. 6, the objective landscape and D(alpha*)."""
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from dicewf import alpha as search, logs
from dicewf.io import read_parquet, write_json, write_parquet

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
p = snakemake.params.alpha
source = snakemake.input.scores
scores = read_parquet(source, "rewards", finite=("len_chars", "len_tokens"))
# an LLM-as-a-Judge rating that could not be parsed is NaN: that response takes no part
unrated = scores["reward"].isna()
if unrated.any():
    print(f"{int(unrated.sum())} of {len(scores)} responses have no reward (unparsed rating)")
    scores = scores[~unrated].reset_index(drop=True)
n_unrated = int(unrated.sum())
common = dict(length_unit=p["length_unit"], min_responses=p["min_responses"], source=source)
lo, hi = p["bounds"]
if p["fixed"] is not None:
    result = {"method": "fixed", "alpha_searched": None, "alpha": float(p["fixed"])}
else:
    found = search.search_alpha(scores, p["method"], (lo, hi), grid_step=p["grid_step"],
                                n_calls=p["n_calls"], seed=p["seed"], **common)
    result = {**found.to_dict(), "alpha_searched": found.alpha,
              "alpha": found.alpha * float(p["scale"])}
alpha = result["alpha"]
result.update(
    scale=float(p["scale"]), bounds=[lo, hi], length_unit=p["length_unit"],
    objective=search.objective(scores, alpha, **common),
    objective_alpha0=search.objective(scores, 0.0, **common),
)
pairs = search.build_pairs(scores, alpha, **common)
unshaped = search.build_pairs(scores, 0.0, **common)
result.update(n_pairs=len(pairs), n_degenerate=pairs.attrs["n_degenerate"],
              n_prompts_dropped=pairs.attrs["n_dropped"],
              mean_len_diff=float(pairs["len_diff"].mean()),
              mean_len_diff_alpha0=float(unshaped["len_diff"].mean()), n_unrated=n_unrated)
alphas = np.linspace(lo, hi, snakemake.params.landscape_points)
length_diffs = pd.concat([
    pd.DataFrame({"dataset": "D(0)", "prompt_id": unshaped["prompt_id"],
                  "len_diff": unshaped["len_diff"].astype("int64")}),
    pd.DataFrame({"dataset": "D(alpha*)", "prompt_id": pairs["prompt_id"],
                  "len_diff": pairs["len_diff"].astype("int64")}),
], ignore_index=True)
write_parquet(search.landscape(scores, alphas, **common), snakemake.output.landscape)
write_parquet(length_diffs, snakemake.output.length_diffs)
write_parquet(pairs, snakemake.output.pairs)
write_json(result, snakemake.output.alpha)
print(result)

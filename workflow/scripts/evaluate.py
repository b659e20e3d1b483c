"""Snakemake adapter: generate on held-out prompts, judge against the references, win rates.

The toy world's two benchmarks from one set of gold-judge preferences: AlpacaEval-style raw and
length-controlled win rates (our LC GLM), and an Arena-Hard-style score with a bootstrap 95%
interval and its length-controlled variant (the gold judge's probabilities mapped to verdicts,
scored by dicewf.arena.score).
"""

from typing import TYPE_CHECKING

from dicewf import arena, logs, toyworld
from dicewf.io import read_parquet, write_json, write_parquet
from dicewf.lcwinrate import win_rates
from dicewf.sampling import sample

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
source = snakemake.input.prompts
prompts = read_parquet(source, "eval_prompts")
responses = sample(
    snakemake.input.policy,
    prompts[["prompt_id", "prompt"]],
    snakemake.params.sampling,
    backend=snakemake.params.backend,
    engine=snakemake.params.engine,
    source=source,
)
responses = responses.merge(prompts[["prompt_id", "reference"]], on="prompt_id", validate="m:1")
judge = toyworld.JudgeSpec.from_dict(snakemake.params.judge)
judged = toyworld.judge_responses(toyworld.tasks_from_frame(prompts), responses, judge)
wr = win_rates(
    judged["preference"], judged["len_model"], judged["len_baseline"], l2=snakemake.params.l2
)
battles = arena.judgments_from_probabilities(
    judged["prompt_id"],
    judged["preference"],
    len_model=judged["len_model"],
    len_baseline=judged["len_baseline"],
)
arena_metrics = arena.score(
    battles, n_bootstrap=snakemake.params.arena["n_bootstrap"], seed=snakemake.params.arena["seed"]
)
metrics = {
    **wr.to_dict(),
    **{k if k.startswith("arena_") else f"arena_{k}": v for k, v in arena_metrics.items()},
    "gold_quality": float(judged["quality"].mean()),
    "truncated": int((responses["finish_reason"] == "length").sum()),
    "policy": snakemake.input.policy,
}
write_parquet(responses, snakemake.output.responses)
write_parquet(judged, snakemake.output.judgements)
write_json(metrics, snakemake.output.metrics)
print(metrics)

"""Snakemake adapter: Table 5's agreement rates of the IntlRM, any published reward models
(ERM) and the implicit reward."""

from typing import TYPE_CHECKING

from dicewf import agreement, logs, toyworld
from dicewf.io import read_parquet, write_json, write_parquet
from dicewf.reward_model import external_reward_scores, reward_scores

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
params = snakemake.params
scores_path = snakemake.input.scores
tuples = agreement.sample_tuples(
    read_parquet(scores_path, "rewards"), params.n, params.seed, source=scores_path
)
if params.judge == "gold":
    tasks = toyworld.tasks_from_frame(read_parquet(snakemake.input.tasks))
    labels = agreement.gold_labels(tuples, tasks, toyworld.JudgeSpec.from_dict(params.gold_judge))
    judge_name = "gold judge (toy world)"
else:
    from dicewf.judge_client import job_client

    client = job_client(params.judge, snakemake.output.judge_cache)
    labels = agreement.judge_labels(tuples, client)
    judge_name = params.judge["model"]
    agreement.check_labelled(labels, f"{client.name} (replies in {client.cache_path})")
frames = {k: tuples[["prompt"]].assign(response=tuples[f"response_{k}"]) for k in (1, 2)}
rm = {
    k: reward_scores(
        snakemake.input.reward_model, frames[k], max_tokens_per_batch=params.max_tokens_per_batch
    )
    for k in (1, 2)
}
tuples = tuples.assign(label=labels, rm_reward_1=rm[1], rm_reward_2=rm[2])
rates = {"IntlRM": agreement.rate(rm[1], rm[2], labels)}
external = snakemake.input.get("external", [])
external = [external] if isinstance(external, str) else list(external)
for i, (path, spec) in enumerate(zip(external, params.external, strict=True)):
    erm = {
        k: external_reward_scores(
            path,
            frames[k],
            head=spec["head"],
            max_tokens_per_batch=params.max_tokens_per_batch,
            source=scores_path,
        )
        for k in (1, 2)
    }
    tuples = tuples.assign(**{f"erm{i}_reward_1": erm[1], f"erm{i}_reward_2": erm[2]})
    rates[spec["label"]] = agreement.rate(erm[1], erm[2], labels)
rates["DPO Implicit Reward"] = agreement.rate(tuples["reward_1"], tuples["reward_2"], labels)
result = {
    "n_tuples": len(tuples),
    "n_labelled": int(tuples["label"].notna().sum()),
    "judge": judge_name,
    "setting": params.setting,
    "rates": rates,
}
write_parquet(tuples, snakemake.output.tuples)
write_json(result, snakemake.output.agreement)
if params.judge != "gold":
    from dicewf.judge_client import finish_job

    finish_job(client, snakemake.output.judge_cache)
print(result)

"""Snakemake adapter: Table 5's agreement rates of the implicit reward and the IntlRM."""
from typing import TYPE_CHECKING

from dicewf import agreement, logs, toyworld
from dicewf.io import read_parquet, write_json, write_parquet
from dicewf.reward_model import reward_scores

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
params = snakemake.params
scores_path = snakemake.input.scores
tuples = agreement.sample_tuples(read_parquet(scores_path, "rewards"), params.n, params.seed,
                                 source=scores_path)
if params.judge == "gold":
    tasks = toyworld.tasks_from_frame(read_parquet(snakemake.input.tasks))
    labels = agreement.gold_labels(tuples, tasks, toyworld.JudgeSpec.from_dict(params.gold_judge))
    judge_name = "gold judge (toy world)"
else:
    from dicewf.judge_client import ChatClient

    labels = agreement.judge_labels(tuples, ChatClient.from_config(dict(params.judge)))
    judge_name = params.judge["model"]
rm = {}
for k in (1, 2):
    frame = tuples[["prompt"]].assign(response=tuples[f"response_{k}"])
    rm[k] = reward_scores(snakemake.input.reward_model, frame,
                          max_tokens_per_batch=params.max_tokens_per_batch)
tuples = tuples.assign(label=labels, rm_reward_1=rm[1], rm_reward_2=rm[2])
result = {
    "n_tuples": len(tuples),
    "n_labelled": int(tuples["label"].notna().sum()),
    "judge": judge_name,
    "setting": params.setting,
    "rates": {
        "IntlRM": agreement.rate(rm[1], rm[2], labels),
        "DPO Implicit Reward": agreement.rate(tuples["reward_1"], tuples["reward_2"], labels),
    },
}
write_parquet(tuples, snakemake.output.tuples)
write_json(result, snakemake.output.agreement)
print(result)
